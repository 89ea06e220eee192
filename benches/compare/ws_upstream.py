#!/usr/bin/env python3
"""The upstream of the idle WebSocket scenario: answers every valid WebSocket upgrade with a
101 and then says nothing, holding the socket until the peer closes it. Counts what it saw so
the harness can prove each proxy really forwarded the upgrades and kept them open: a request
without an upgrade (GET /stats) is answered "upgrades U open O", U upgrades accepted since
start and O of them still open. An upgrade request missing what RFC 6455 section 4.2.1
requires gets a 400, so a proxy that drops Upgrade or Connection is caught.

    ws_upstream.py PORT
"""
import asyncio
import base64
import hashlib
import sys

# RFC 6455 section 1.3: the accept key is base64(SHA-1(key + this GUID)).
WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

upgrades = 0
still_open = 0


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + WEBSOCKET_GUID).digest()).decode()


def valid_key(key: str) -> bool:
    """RFC 6455 section 4.1: the key is 16 random bytes, base64-encoded."""
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        return False


def has_token(value: str, token: str) -> bool:
    return token in (part.strip().lower() for part in value.split(","))


async def answer(writer, status: str, body: str):
    writer.write(
        f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}".encode()
    )
    await writer.drain()
    writer.close()


async def serve(reader, writer):
    global upgrades, still_open
    try:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        writer.close()
        return
    headers = {}
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "upgrade" not in headers:
        await answer(writer, "200 OK", f"upgrades {upgrades} open {still_open}\n")
        return
    key = headers.get("sec-websocket-key", "")
    if (
        headers["upgrade"].lower() != "websocket"
        or not has_token(headers.get("connection", ""), "upgrade")
        or headers.get("sec-websocket-version") != "13"
        or not valid_key(key)
    ):
        await answer(writer, "400 Bad Request", "not a valid WebSocket upgrade\n")
        return
    writer.write(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n".encode()
    )
    await writer.drain()
    upgrades += 1
    still_open += 1
    try:
        # Silent: whatever arrives (nothing, in the scenario) is read and dropped until EOF.
        while await reader.read(65536):
            pass
    except ConnectionError:
        pass
    finally:
        still_open -= 1
        writer.close()


async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    async with server:
        await server.serve_forever()


asyncio.run(main())
