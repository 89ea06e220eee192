#!/usr/bin/env python3
"""The ordinary visitor of benches/compare/slow.sh: RATE requests a second for DURATION
seconds, each on a new connection from SOURCE (another loopback address than the attacker's),
each given TIMEOUT seconds to answer in full. Requests are independent: one that hangs does
not delay the next.

    probe.py SOURCE PORT PATH RATE DURATION TIMEOUT

Prints one line:
    sent served p50_ms p99_ms timeouts closed other_status per_10s codes
where served = 2xx with the whole body within TIMEOUT, p50/p99 are over the served requests
("-" if none), timeouts = no full answer within TIMEOUT, closed = connection refused, reset
or closed before a full answer, other_status = answered with a non-2xx status, and per_10s
is the share served in each 10 s slice, e.g. 100,100,96,100 (shows when an attack starts
to hurt), codes the non-2xx statuses seen, e.g. 502x3,504x1 ("-" if none).
"""
import asyncio
import sys
import time


async def one(source, port, path, timeout):
    """Returns ("ok" | "timeout" | "closed" | "status", seconds, HTTP status or None)."""
    start = time.monotonic()
    status = None

    async def exchange():
        nonlocal status
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: probe.test\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = None
            for line in head.split(b"\r\n")[1:]:
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length is None:
                await reader.read()  # until the server closes
            else:
                await reader.readexactly(length)
            return "ok" if 200 <= status < 300 else "status"
        finally:
            writer.close()

    try:
        outcome = await asyncio.wait_for(exchange(), timeout)
    except asyncio.TimeoutError:
        outcome = "timeout"
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError):
        outcome = "closed"
    return outcome, time.monotonic() - start, status


def percentile(sorted_values, p):
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p))]


async def main():
    source, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    rate, duration, timeout = float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
    count = int(rate * duration)
    begin = time.monotonic()
    tasks = []
    for i in range(count):
        # A fixed schedule, not "next after the last": a slow answer must not slow the probe.
        await asyncio.sleep(max(0.0, begin + i / rate - time.monotonic()))
        tasks.append(asyncio.create_task(one(source, port, path, timeout)))
    results = await asyncio.gather(*tasks)

    served = sorted(t for outcome, t, _ in results if outcome == "ok")
    counts = {k: sum(1 for outcome, _, _ in results if outcome == k) for k in ("timeout", "closed", "status")}
    codes = {}
    for outcome, _, status in results:
        if outcome == "status":
            codes[status] = codes.get(status, 0) + 1
    codes = ",".join(f"{code}x{n}" for code, n in sorted(codes.items())) or "-"
    per_slice = int(rate * 10) or 1
    slices = [results[i:i + per_slice] for i in range(0, len(results), per_slice)]
    shares = ",".join(str(round(100 * sum(1 for o, _, _ in s if o == "ok") / len(s))) for s in slices)
    p50 = f"{percentile(served, 0.50) * 1000:.1f}" if served else "-"
    p99 = f"{percentile(served, 0.99) * 1000:.1f}" if served else "-"
    print(len(results), len(served), p50, p99, counts["timeout"], counts["closed"], counts["status"], shares, codes)


asyncio.run(main())
