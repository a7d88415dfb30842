#!/usr/bin/env node
// TEST-ONLY. A minimal WebSocket client (RFC 6455) over node's `net`, for the proxy integration specs:
// Node 20's global WebSocket is still behind a flag, and no WS package is installed.
//
//   node ws_client.mjs <url> [header:value ...]
//
// Connects to ws://host:port/path, checks the 101 and Sec-WebSocket-Accept, then sends (masked) a text
// frame, a 3-byte binary frame, a 200 KiB binary frame and a ping, reads the answers, sends a close and
// waits for the close echo. Prints one JSON line:
//   {"ok":true,"status":101,"accept_ok":true,"text":"...","binary":[...],"big_ok":true,"pong":"...",
//    "close_code":1000,"response_head":"..."}
// or {"ok":false,"error":"...","response_head":"..."}; exit code 0 / 1. Gives up after 15 s.
import net from "node:net";
import crypto from "node:crypto";

const url = new URL(process.argv[2]);
const extra = process.argv.slice(3);
const key = crypto.randomBytes(16).toString("base64");
const expectAccept = crypto
  .createHash("sha1")
  .update(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
  .digest("base64");
const big = crypto.randomBytes(200 * 1024);
const result = { ok: false };

function done(err) {
  if (err) result.error = String(err);
  result.ok = !err;
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exit(err ? 1 : 0);
}
setTimeout(() => done("timeout; got so far: " + JSON.stringify(result)), 15000);

function frame(opcode, payload) {
  const mask = crypto.randomBytes(4);
  const n = payload.length;
  let head;
  if (n < 126) {
    head = Buffer.from([0x80 | opcode, 0x80 | n]);
  } else if (n < 65536) {
    head = Buffer.from([0x80 | opcode, 0x80 | 126, n >> 8, n & 255]);
  } else {
    head = Buffer.alloc(10);
    head[0] = 0x80 | opcode;
    head[1] = 0x80 | 127;
    head.writeBigUInt64BE(BigInt(n), 2);
  }
  const body = Buffer.alloc(n);
  for (let i = 0; i < n; i++) body[i] = payload[i] ^ mask[i % 4];
  return Buffer.concat([head, mask, body]);
}

// Parses one frame at the start of buf: { fin, opcode, payload, size } or null when incomplete.
function parse(buf) {
  if (buf.length < 2) return null;
  let n = buf[1] & 0x7f;
  let off = 2;
  if (n === 126) {
    if (buf.length < 4) return null;
    n = buf.readUInt16BE(2);
    off = 4;
  } else if (n === 127) {
    if (buf.length < 10) return null;
    n = Number(buf.readBigUInt64BE(2));
    off = 10;
  }
  if (buf[1] & 0x80) return { error: "server frame is masked" };
  if (buf.length < off + n) return null;
  return { fin: !!(buf[0] & 0x80), opcode: buf[0] & 0x0f, payload: buf.subarray(off, off + n), size: off + n };
}

const sock = net.connect(Number(url.port || 80), url.hostname, () => {
  const lines = [
    `GET ${url.pathname}${url.search} HTTP/1.1`,
    `Host: ${url.host}`,
    "Upgrade: websocket",
    "Connection: Upgrade",
    `Sec-WebSocket-Key: ${key}`,
    "Sec-WebSocket-Version: 13",
    ...extra,
  ];
  sock.write(lines.join("\r\n") + "\r\n\r\n");
});
sock.on("error", (e) => done(e.message));
sock.on("close", () => {
  if (result.close_code === undefined) done("connection closed early");
});

let buf = Buffer.alloc(0);
let headDone = false;
let step = 0;
sock.on("data", (chunk) => {
  buf = Buffer.concat([buf, chunk]);
  if (!headDone) {
    const end = buf.indexOf("\r\n\r\n");
    if (end < 0) return;
    const head = buf.subarray(0, end).toString("latin1");
    result.response_head = head;
    buf = buf.subarray(end + 4);
    headDone = true;
    result.status = Number(head.split(" ")[1]);
    if (result.status !== 101) return done("status " + result.status);
    const m = head.match(/\r\nsec-websocket-accept:\s*(\S+)/i);
    result.accept_ok = !!m && m[1] === expectAccept;
    if (!result.accept_ok) return done("bad Sec-WebSocket-Accept");
    sock.write(frame(1, Buffer.from("héllo proxy", "utf8")));
    sock.write(frame(2, Buffer.from([0, 255, 7])));
    sock.write(frame(2, big));
    sock.write(frame(9, Buffer.from("are you there")));
  }
  for (;;) {
    const f = parse(buf);
    if (!f) return;
    if (f.error) return done(f.error);
    buf = buf.subarray(f.size);
    if (f.opcode === 1) result.text = f.payload.toString("utf8");
    else if (f.opcode === 2 && step === 0) result.binary = [...f.payload];
    else if (f.opcode === 2) result.big_ok = Buffer.compare(f.payload, big) === 0;
    else if (f.opcode === 10) result.pong = f.payload.toString();
    else if (f.opcode === 8) {
      result.close_code = f.payload.length >= 2 ? f.payload.readUInt16BE(0) : null;
      sock.end();
      return done(null);
    }
    if (f.opcode === 2) step++;
    if (result.pong !== undefined && result.big_ok !== undefined && result.text !== undefined && step === 2) {
      sock.write(frame(8, Buffer.from([0x03, 0xe8])));
    }
  }
});
