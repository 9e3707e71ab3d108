"""Open-loop HTTP/1.1 keep-alive load at a fixed rate, for latency at a given throughput.

Run as its own process (the benchmark starts it):

    python benchmarks/api_load.py --url http://127.0.0.1:8000 --rate 1000 --seconds 10 \
        --connections 32 --users 10000 --key dk_... --path /v1/users/{user}/offers

Each request is *scheduled* at a fixed interval; its latency is measured from the
scheduled time (so a stalled server cannot hide queueing: no coordinated omission).
Prints one JSON line: sent, ok, errors, achieved rate, p50/p90/p99/p99.9/max in ms.

The benchmark uses ``benchmarks/openloop.c`` (the same method in C) when a C compiler is
found; this one is its fallback and ``--client python|both`` of ``api_reads.py``. On a small
machine it adds its own lateness to what it measures (~0.7 ms at p50 and ~1 ms at p99 beside
openloop.c on 2 cores, more when the OS deschedules it): see docs/api.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from urllib.parse import urlsplit


async def worker(host: str, port: int, queue: asyncio.Queue[tuple[float, bytes] | None],
                 latencies: list[float], errors: list[str]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while True:
            item = await queue.get()
            if item is None:
                return
            scheduled, request = item
            writer.write(request)
            status = await read_response(reader)
            done = time.perf_counter()
            if status == 200:
                latencies.append(done - scheduled)
            else:
                errors.append(str(status))
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if length:
        await reader.readexactly(length)
    return status


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(pct / 100 * len(ordered) + 0.5)) - 1))
    return ordered[index] * 1000


async def run(args: argparse.Namespace) -> dict[str, float | int]:
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
    latencies: list[float] = []
    errors: list[str] = []
    workers = [asyncio.create_task(worker(host, port, queue, latencies, errors))
               for _ in range(args.connections)]
    rng = random.Random(7)
    interval = 1.0 / args.rate
    total = int(args.rate * args.seconds)
    start = time.perf_counter() + 0.2
    for i in range(total):
        scheduled = start + i * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        path = args.path.replace("{user}", f"u-{rng.randint(1, args.users)}")
        request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\n"
                   f"Authorization: Bearer {args.key}\r\n\r\n").encode()
        queue.put_nowait((scheduled, request))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - start
    return {
        "sent": total, "ok": len(latencies), "errors": len(errors),
        "rate": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p90_ms": round(percentile(latencies, 90), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "p99_9_ms": round(percentile(latencies, 99.9), 2),
        "max_ms": round(max(latencies) * 1000, 2) if latencies else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--key", default="")
    parser.add_argument("--path", default="/v1/users/{user}/offers")
    print(json.dumps(asyncio.run(run(parser.parse_args()))))


if __name__ == "__main__":
    main()
