"""POST /v1/events with tracing off and on: the API's CPU per request, side by side.

    .venv/bin/python benchmarks/api_events.py [--modes off,0.1,1] [--rounds 3] [--seconds 8]

Starts an embedded PostgreSQL, Valkey and Kafka-protocol broker (under
var/bench-events-<pid>), creates an API key, and for each mode serves the API with
uvicorn (1 worker, uvloop + httptools): ``off`` (DECISIONS_TRACING=off) or a sample
ratio (DECISIONS_TRACING=on, DECISIONS_TRACING_SAMPLE_RATIO=ratio), spans exported by
OTLP/HTTP to a receiver in this process that decodes and counts them. ``wrk`` posts one
event per request (a new event id each, 10,000 users) over keep-alive connections; each
request waits for the broker's acknowledgement. The modes alternate, round after round,
and each figure is the median round. CPU per request is the server process's user+system
time over the requests it answered: less sensitive to a shared machine than req/s.

The read routes (GET offers, recommendations) run no tracing code in any mode.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.api_reads import cpu_seconds, serve  # noqa: E402
from benchmarks.otlp_sink import OtlpSink  # noqa: E402
from decisions.cli import migrate  # noqa: E402
from decisions.cli.stack.embedded import EmbeddedStack  # noqa: E402
from decisions.cli.stack.process import free_port  # noqa: E402
from decisions.core.db import make_engine  # noqa: E402
from decisions.core.settings import Settings  # noqa: E402
from decisions.runtime import apikeys  # noqa: E402
from decisions.runtime.kafka import ensure_topics  # noqa: E402

WRK_POST = """
math.randomseed(%(seed)d)
local counter = 0
local prefix = "%(prefix)s"
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer %(key)s"
wrk.headers["Content-Type"] = "application/json"
request = function()
  counter = counter + 1
  local body = string.format(
    '{"event_id":"%%s-%%d","type":"page_view","user_id":"u-%%d","ts":"%(ts)s",'
    .. '"properties":{"page":"product","product_id":"p-%%d"}}',
    prefix, counter, math.random(1, 10000), math.random(1, 40))
  return wrk.format(nil, nil, nil, body)
end
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format(
    '{"requests": %%d, "seconds": %%.3f, "errors": %%d, "p50_ms": %%.3f, "p99_ms": %%.3f}\\n',
    summary.requests, summary.duration / 1e6, errors,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def post_run(url: str, key: str, seconds: float, connections: int, pid: int, workdir: Path,
             n: int) -> dict[str, Any]:
    import json

    script = workdir / f"events-{n}.lua"
    ts = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    script.write_text(WRK_POST % {"seed": n, "prefix": f"r{n}-{os.getpid()}", "key": key,
                                  "ts": ts})
    before = cpu_seconds(pid)
    done = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout",
                           "5s", "-s", str(script), url + "/v1/events"],
                          capture_output=True, text=True, check=True)
    used = cpu_seconds(pid) - before
    result: dict[str, Any] = json.loads(
        [x for x in done.stdout.splitlines() if x.startswith("{")][-1])
    result["rate"] = result["requests"] / result["seconds"]
    result["cpu_us"] = used / max(1, result["requests"]) * 1e6
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="off,0.1,1")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install -y wrk")
    modes = args.modes.split(",")
    var = ROOT / "var" / f"bench-events-{os.getpid()}"
    stack = EmbeddedStack(var)
    receiver = OtlpSink()
    try:
        database_url = migrate.create_database(stack.start_postgres(), "decisions_bench")
        redis_url, bootstrap = stack.start_redis(), stack.start_kafka()
        engine = make_engine(database_url, pool_size=1)
        key, _ = apikeys.create_key(engine, "benchmark", ["events:write"])
        engine.dispose()
        settings = Settings.from_env({}).with_services(
            database_url=database_url, redis_url=redis_url, kafka_bootstrap=bootstrap)
        ensure_topics(settings, [settings.events_topic])
        base = {**os.environ, "DECISIONS_DATABASE_URL": database_url,
                "DECISIONS_REDIS_URL": redis_url, "DECISIONS_KAFKA_BOOTSTRAP": bootstrap,
                "DECISIONS_RATE_LIMIT_PER_SECOND": "10000000",
                "DECISIONS_RATE_LIMIT_BURST": "10000000", "DECISIONS_LOG_LEVEL": "WARNING"}
        results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            for n in range(args.rounds):
                for mode in modes:
                    env = {**base, "DECISIONS_TRACING": "off"} if mode == "off" else {
                        **base, "DECISIONS_TRACING": "on",
                        "DECISIONS_TRACING_SAMPLE_RATIO": mode,
                        "DECISIONS_OTLP_ENDPOINT": receiver.url}
                    port = free_port()
                    proc = serve("api", port, env, var / f"api-{mode}-{n}.log", "standard")
                    try:
                        url = f"http://127.0.0.1:{port}"
                        post_run(url, key, 2, args.connections, proc.pid, work, 1000 + n)
                        spans = receiver.spans
                        result = post_run(url, key, args.seconds, args.connections, proc.pid,
                                          work, n)
                    finally:
                        proc.terminate()  # the lifespan's stop exports what is buffered
                        proc.wait(20)
                    result["spans"] = receiver.spans - spans
                    results[mode].append(result)
                    print(f"round {n + 1} tracing {mode:>4}: {result['rate']:,.0f} req/s, "
                          f"API CPU {result['cpu_us']:,.0f} µs/request, p50 "
                          f"{result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, "
                          f"{result['errors']} errors, {result['spans']:,} spans received "
                          f"(load average {os.getloadavg()[0]:.1f})", flush=True)
        print(f"\nPOST /v1/events, 1 event per request, {args.connections} connections, "
              f"{args.seconds:g}s x {args.rounds} alternating rounds (median):")
        for mode, rs in results.items():
            print(f"  tracing {mode:>4}: API CPU {statistics.median(r['cpu_us'] for r in rs):,.0f}"
                  f" µs/request (rounds " + ", ".join(f"{r['cpu_us']:,.0f}" for r in rs)
                  + f"), {statistics.median(r['rate'] for r in rs):,.0f} req/s, p99 "
                  f"{statistics.median(r['p99_ms'] for r in rs):.2f} ms")
    finally:
        stack.stop()
        shutil.rmtree(var, ignore_errors=True)


if __name__ == "__main__":
    main()
