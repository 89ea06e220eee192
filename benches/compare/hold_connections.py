#!/usr/bin/env python3
"""Opens N connections to a loopback port and holds them all open, idle, until stdin closes.

    hold_connections.py PORT N HOST [keepalive|websocket]

keepalive (the default): one GET /small on each connection, its answer read whole.
websocket: one WebSocket upgrade (GET /ws) on each; the answer must be a 101 with the right
Sec-WebSocket-Accept (RFC 6455 section 4.2.2), after which nothing is sent either way.

Prints "ready N" once all are open and idle, or "failed K of N: REASON" and exits 1 if any
connection could not be made or got another answer. Each line then read from stdin is answered
"open M": how many of the N the server has not closed yet (a held connection is watched for
EOF), so the caller can prove they were all still open when it measured.
"""
import asyncio
import base64
import hashlib
import os
import sys

# RFC 6455 section 1.3: the accept key is base64(SHA-1(key + this GUID)).
WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Refused(Exception):
    """The server answered, but not what the mode needs."""


def content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


async def keepalive(reader, writer, host: str):
    writer.write(f"GET /small HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode("latin-1")
    if not status.split(" ")[1:2] or not status.split(" ")[1].startswith("2"):
        raise Refused(status)
    await reader.readexactly(content_length(head))


async def websocket(reader, writer, host: str):
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await writer.drain()
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status, *lines = head.split("\r\n")
    if status.split(" ")[1:2] != ["101"]:
        raise Refused(status)
    expected = base64.b64encode(hashlib.sha1(key.encode() + WEBSOCKET_GUID).digest()).decode()
    accept = [line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("sec-websocket-accept:")]
    if accept != [expected]:
        raise Refused(f"101 with Sec-WebSocket-Accept {accept}, expected {expected}")


class Held:
    def __init__(self):
        self.writers = []
        self.watchers = []  # the event loop keeps only weak references to tasks
        self.closed = 0

    async def watch(self, reader):
        """Counts the connection closed once the server ends it; anything it sends is dropped."""
        try:
            while await reader.read(65536):
                pass
        except ConnectionError:
            pass
        self.closed += 1

    async def open_one(self, port: int, host: str, handshake):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            await handshake(reader, writer, host)
        except BaseException:
            writer.close()
            raise
        self.writers.append(writer)
        self.watchers.append(asyncio.create_task(self.watch(reader)))


async def main():
    port, count, host = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    handshake = {"keepalive": keepalive, "websocket": websocket}[sys.argv[4] if len(sys.argv) > 4 else "keepalive"]
    held = Held()
    failures = []
    # Open in batches so the listen backlog is never the bottleneck.
    for start in range(0, count, 500):
        batch = [held.open_one(port, host, handshake) for _ in range(start, min(start + 500, count))]
        failures += [r for r in await asyncio.gather(*batch, return_exceptions=True) if r is not None]
    if failures:
        first = failures[0]
        print(f"failed {len(failures)} of {count}: {type(first).__name__}: {first}", flush=True)
        sys.exit(1)
    print(f"ready {len(held.writers)}", flush=True)
    loop = asyncio.get_running_loop()
    while await loop.run_in_executor(None, sys.stdin.readline):
        print(f"open {len(held.writers) - held.closed}", flush=True)
    for writer in held.writers:
        writer.close()


asyncio.run(main())
