#!/usr/bin/env python3
"""An upstream app with a fixed number of workers, for benches/compare/slow.sh.

Each accepted connection needs one of WORKERS permits before a byte of it is read, and keeps
it until the connection closes: the model of an app server with 64 worker threads, each
serving one keep-alive connection at a time. A connection that gets no permit waits, as it
would in a real server's accept queue. An idle kept-alive connection is closed after 5 s
(Node's default keepAliveTimeout), so a proxy's idle pool cannot hold workers for long.

    capped_app.py PORT WORKERS BIG_BYTES STATS_FILE

GET /big answers BIG_BYTES bytes (the large resource a slow reader asks for); anything else
answers 20 bytes. Content-Length and chunked request bodies are read and discarded.
On SIGTERM it writes one JSON line of counts to STATS_FILE and exits:
peak workers busy, peak connections waiting for a worker, requests answered, and POSTs seen.
"""
import asyncio
import json
import os
import signal
import sys

IDLE_TIMEOUT = 5.0
SMALL = b"hello from upstream\n"


class Stats:
    def __init__(self):
        self.busy = self.peak_busy = 0
        self.waiting = self.peak_waiting = 0
        self.requests = self.posts = 0


async def read_body(reader, headers):
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                # Trailers (none expected) end with an empty line.
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                return
            await reader.readexactly(size + 2)
    length = int(headers.get(b"content-length", b"0"))
    while length > 0:
        chunk = await reader.read(min(length, 65536))
        if not chunk:
            raise ConnectionError("body cut short")
        length -= len(chunk)


async def serve(reader, writer, stats, big):
    while True:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            return
        lines = head.split(b"\r\n")
        method, target, version = (lines[0].split(b" ") + [b"", b""])[:3]
        headers = {}
        for line in lines[1:]:
            if b":" in line:
                name, value = line.split(b":", 1)
                headers[name.strip().lower()] = value.strip()
        await read_body(reader, headers)
        if method == b"POST":
            stats.posts += 1
        body = big if target.split(b"?")[0] == b"/big" else SMALL
        close = version == b"HTTP/1.0" or headers.get(b"connection", b"").lower() == b"close"
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n"
            % (len(body), b"Connection: close\r\n" if close else b"")
        )
        writer.write(body)
        # The worker stays busy until the whole answer has left, as a blocking write would.
        await writer.drain()
        stats.requests += 1
        if close:
            return


async def main():
    port, workers, big_bytes, stats_file = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    big = b"x" * big_bytes
    stats = Stats()
    permits = asyncio.Semaphore(workers)

    async def handle(reader, writer):
        stats.waiting += 1
        stats.peak_waiting = max(stats.peak_waiting, stats.waiting)
        async with permits:
            stats.waiting -= 1
            stats.busy += 1
            stats.peak_busy = max(stats.peak_busy, stats.busy)
            try:
                await serve(reader, writer, stats, big)
            except (ConnectionError, asyncio.IncompleteReadError, ValueError):
                pass
            finally:
                stats.busy -= 1
                writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()
    with open(stats_file, "w") as out:
        json.dump(
            {"peak_busy": stats.peak_busy, "peak_waiting": stats.peak_waiting,
             "requests": stats.requests, "posts": stats.posts},
            out,
        )
        out.write("\n")
    # Connections still waiting for a worker would each log their cancellation: leave now.
    os._exit(0)


asyncio.run(main())
