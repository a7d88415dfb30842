# TEST-ONLY. A GET /v1/events client that does not read (for stream_events_spec.lua): it connects with a tiny
# receive buffer, sends the request and reads nothing until the file GO exists; then it reads to the end of
# the response and writes the de-chunked body to OUT. Exits 0 when the server ended the body (the last
# chunk came), 2 when it did not within the time given; the exit code is also written to OUT.rc.
#   python3 sse_client.py PORT PATH KEY LAST_EVENT_ID(or "") OUT GO SECONDS
import os
import socket
import sys
import time

port, path, key, last, out, go, seconds = sys.argv[1:8]
deadline = time.time() + float(seconds)
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
s.connect(("127.0.0.1", int(port)))
head = "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nOPEN-SANDBOX-API-KEY: %s\r\nConnection: close\r\n" % (path, key)
if last:
    head += "Last-Event-ID: %s\r\n" % last
s.sendall((head + "\r\n").encode())
while not os.path.exists(go):
    if time.time() > deadline:
        with open(out + ".rc", "w") as f:
            f.write("2\n")
        sys.exit(2)
    time.sleep(0.05)
data = b""
s.settimeout(1)
while time.time() < deadline:
    try:
        b = s.recv(65536)
    except socket.timeout:
        continue
    if not b:
        break
    data += b
head, _, rest = data.partition(b"\r\n\r\n")
body, complete = b"", False
while rest:
    size_line, _, rest = rest.partition(b"\r\n")
    n = int(size_line.split(b";")[0] or b"0", 16)
    if n == 0:
        complete = True
        break
    body += rest[:n]
    rest = rest[n + 2:]
with open(out, "wb") as f:
    f.write(body)
with open(out + ".rc", "w") as f:
    f.write("0\n" if complete else "2\n")
sys.exit(0 if complete else 2)
