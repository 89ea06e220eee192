#!/usr/bin/env python3
"""Opens N keep-alive connections to a loopback port, sends one request on each, reads the
answer, and holds them all open until stdin closes. Prints "ready N" once all are idle.

    hold_connections.py PORT N HOST
"""
import asyncio
import sys


async def one(port: int, host: str):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /small HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return reader, writer


async def main():
    port, count, host = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    held = []
    # Open in batches so the listen backlog is never the bottleneck.
    for start in range(0, count, 500):
        batch = [one(port, host) for _ in range(start, min(start + 500, count))]
        held.extend(await asyncio.gather(*batch))
    print(f"ready {len(held)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for _, writer in held:
        writer.close()


asyncio.run(main())
