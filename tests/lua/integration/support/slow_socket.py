#!/usr/bin/env python3
"""A unix-socket proxy in front of the real Docker socket that delays the requests whose bytes contain
MATCH by DELAY seconds (a busy daemon, for tests/lua/integration/lifecycle/docker_busy_spec.lua).

    slow_socket.py LISTEN_PATH TARGET_PATH DELAY MATCH
"""
import asyncio
import sys

LISTEN, TARGET, DELAY, MATCH = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4].encode()


async def pipe(reader, writer, slow):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            if slow and MATCH in data:
                await asyncio.sleep(DELAY)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def handle(client_r, client_w):
    try:
        up_r, up_w = await asyncio.open_unix_connection(TARGET)
    except OSError:
        client_w.close()
        return
    await asyncio.gather(pipe(client_r, up_w, True), pipe(up_r, client_w, False))


async def main():
    server = await asyncio.start_unix_server(handle, path=LISTEN)
    async with server:
        await server.serve_forever()


asyncio.run(main())
