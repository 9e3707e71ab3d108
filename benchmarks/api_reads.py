"""Storefront API read benchmark: GET offers and recommendations, 10,000 users in real Redis.

    .venv/bin/python benchmarks/api_reads.py [--users 10000] [--seconds 10] [--connections 64]

1. starts an embedded PostgreSQL and Valkey (under var/bench-api-<pid>), migrates, imports
   the demo catalog, creates an API key, and writes 10,000 users' offers, recommendations,
   bought sets and customer records to Redis (plus the top-sellers zset);
2. serves the API with uvicorn (1 worker, no access log) and, with the same settings, a bare
   Starlette endpoint returning constant JSON (the ceiling);
3. drives load from separate processes over keep-alive connections: ``wrk`` (Debian
   package) at full speed for throughput and latency, then an open-loop client at a fixed
   1,000 req/s for latency at that rate: ``benchmarks/openloop.c`` (compiled with the
   machine's C compiler into this run's directory; the wrk2 method: requests scheduled at
   fixed intervals, latency from the scheduled time), or with ``--client python`` (and
   when no C compiler is found) ``benchmarks/api_load.py``, the same thing in asyncio —
   which on a 2-core machine adds its own lateness (GIL, event loop) to the tail;
   both in two server modes: ``standard`` (uvloop + httptools, which uvicorn picks when
   they are installed, as they are with this project) and ``pure-python`` (asyncio + h11);
4. prints each run and a summary against the targets (≥3,000 req/s, p99 < 10 ms at
   1,000 req/s, ≥60 % of the bare endpoint's throughput).

Each request picks a random user; every API answer is personalized (checked before the
runs, and the fallback count is read from /metrics after them: it should be 0). The rate
limit is raised so the token bucket runs but never refuses; the Redis timeout is raised to
1 s so a stall of the busy machine is measured as latency, not served as fallback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis

from decisions.cli import migrate
from decisions.cli.demo_replay import DEMO_CATALOG
from decisions.cli.stack.embedded import EmbeddedStack
from decisions.cli.stack.process import free_port
from decisions.core import keys
from decisions.core.db import make_engine
from decisions.runtime import apikeys, catalog
from decisions.runtime.offers import OfferStore

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

WRK_SCRIPT = """
math.randomseed(7)
local users = %(users)d
local path = "%(path)s"
wrk.headers["Authorization"] = "Bearer %(key)s"
request = function()
  return wrk.format("GET", (path:gsub("{user}", "u-" .. math.random(1, users))))
end
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format(
    '{"requests": %%d, "seconds": %%.3f, "errors": %%d, "p50_ms": %%.3f, "p90_ms": %%.3f, '
    .. '"p99_ms": %%.3f, "p99_9_ms": %%.3f, "max_ms": %%.3f}\\n',
    summary.requests, summary.duration / 1e6, errors,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency:percentile(99.9) / 1000, latency.max / 1000))
end
"""


def seed(redis_url: str, users: int) -> None:
    client = redis.Redis.from_url(redis_url)
    store = OfferStore(client)
    now = datetime.now(UTC)
    expires = now + timedelta(hours=6)
    now_ms = int(now.timestamp() * 1000)
    pipe = client.pipeline(transaction=False)
    for n in range(1, users + 1):
        uid = f"u-{n}"
        for rule, priority in (("cart-rescue", 5), ("welcome-back", 2)):
            offer = {
                "offer_id": f"{uid}-{rule}", "rule": rule, "ruleset": "promo",
                "ruleset_version": 4, "kind": "discount",
                "discount": {"type": "percent", "value": 10 + priority, "code": f"SAVE{priority}"},
                "priority": priority, "stackable": True,
                "expires_at": expires.isoformat().replace("+00:00", "Z"),
                "expires_ms": int(expires.timestamp() * 1000),
                "created_at": now.isoformat().replace("+00:00", "Z"),
                "reason": {"cart_value": 120 + n % 50, "pattern": "cart_value > 100"},
                "event_id": f"e-{uid}",
            }
            store.store_offer(pipe, uid, offer, now_ms, 6 * 3600)
        products = [f"p-{(n + i * 7) % 40 + 1}" for i in range(12)]
        pipe.hset(keys.recs(uid), "default", orjson.dumps({
            "products": products, "rule": "viewed-category", "ruleset": "promo",
            "ruleset_version": 4, "strategy": "covisit",
            "expires_at": expires.isoformat().replace("+00:00", "Z")}))
        if n % 3 == 0:
            pipe.sadd(keys.bought(uid), products[0])
        pipe.set(keys.customer(uid), orjson.dumps({"tier": "gold" if n % 5 == 0 else "basic",
                                                   "consent": True}))
        if n % 1000 == 0:
            pipe.execute()
    for i in range(1, 41):
        pipe.zadd(keys.top_seller(f"p-{i}"), {f"p-{i}": 100 - i})
    pipe.execute()
    client.close()


SERVER_MODES = {
    "standard": ["--loop", "uvloop", "--http", "httptools"],  # what uvicorn picks when installed
    "pure-python": ["--loop", "asyncio", "--http", "h11"],
    # DECISIONS_API_SERVER=hypercorn: HTTP/1.1 (wrk) and, with h2load, HTTP/2 (h2c)
    "hypercorn": ["-k", "uvloop"],
    # granian (Rust HTTP/1.1 and HTTP/2 under an ASGI interface), one worker, uvloop
    "granian": ["--loop", "uvloop", "--runtime-threads", "1"],
}
GROUPS = {"both": ["standard", "pure-python"], "compare": ["standard", "hypercorn", "granian"]}


def serve(factory: str, port: int, env: dict[str, str], log: Path,
          mode: str) -> subprocess.Popen[bytes]:
    if mode == "hypercorn":
        command = [PYTHON, "-m", "hypercorn", f"benchmarks.api_serve:{factory}()",
                   "--bind", f"127.0.0.1:{port}", "--workers", "1", "--log-level", "warning",
                   *SERVER_MODES[mode]]
    elif mode == "granian":
        command = [PYTHON, "-m", "granian", "--interface", "asgi", "--factory",
                   f"benchmarks.api_serve:{factory}", "--host", "127.0.0.1", "--port",
                   str(port), "--workers", "1", "--log-level", "warning", "--no-access-log",
                   *SERVER_MODES[mode]]
    else:
        command = [PYTHON, "-m", "uvicorn", "--factory", f"benchmarks.api_serve:{factory}",
                   "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                   "--no-access-log", "--log-level", "warning", *SERVER_MODES[mode]]
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/users/u-1/offers").status_code:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{factory} server did not start; see {log}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children (hypercorn serves from a
    child of the command)."""
    import psutil

    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return sum(p.cpu_times().user + p.cpu_times().system for p in procs)


def wrk(url: str, path: str, key: str, users: int, seconds: float, connections: int,
        workdir: Path, watch: dict[str, int] | None = None) -> dict[str, Any]:
    """``watch``: processes whose CPU time per request is reported (name -> pid)."""
    script = workdir / "reads.lua"
    script.write_text(WRK_SCRIPT % {"users": users, "path": path, "key": key})
    before = {name: cpu_seconds(pid) for name, pid in (watch or {}).items()}
    done = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "2s",
         "-s", str(script), url],
        capture_output=True, text=True, check=True,
    )
    line = [x for x in done.stdout.splitlines() if x.startswith("{")][-1]
    result: dict[str, Any] = json.loads(line)
    result["rate"] = round(result["requests"] / result["seconds"], 1)
    for name, pid in (watch or {}).items():
        used = cpu_seconds(pid) - before[name]
        result[f"{name}_cpu_us"] = round(used / max(1, result["requests"]) * 1e6, 1)
    return result


def build_openloop(workdir: Path) -> list[str] | None:
    """Compile ``benchmarks/openloop.c``; the command to run it, or None without a C
    compiler (no binary is kept in the repository: it is built for this machine each run)."""
    compiler = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not compiler:
        return None
    binary = workdir / "openloop"
    subprocess.run([compiler, "-O2", "-o", str(binary), str(ROOT / "benchmarks" / "openloop.c"),
                    "-lm"], check=True)
    return [str(binary)]


PYTHON_CLIENT = [PYTHON, str(ROOT / "benchmarks" / "api_load.py")]


def fixed_rate(client: list[str], url: str, path: str, key: str, users: int, rate: int,
               seconds: float) -> dict[str, Any]:
    done = subprocess.run(
        [*client, "--url", url, "--rate", str(rate),
         "--seconds", str(seconds), "--connections", "32", "--users", str(users),
         "--key", key, "--path", path],
        capture_output=True, text=True, check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def client_name(client: list[str]) -> str:
    return "api_load.py" if client == PYTHON_CLIENT else "openloop.c"


def server_over_10ms(url: str, word: str) -> tuple[float, float]:
    """(requests over 10 ms, all requests) so far on the API's routes containing ``word``,
    by the API's own latency histogram: the time the app itself took, without the time a
    request waited in the server's event loop or the client's."""
    over = total = 0.0
    for line in httpx.get(url + "/metrics").text.splitlines():
        if not line.startswith("decisions_api_request_seconds_bucket{") or word not in line:
            continue
        count = float(line.rsplit(" ", 1)[1])
        if 'le="+Inf"' in line:
            over, total = over + count, total + count
        elif 'le="0.01"' in line:
            over -= count
    return over, total


def h2load(url: str, path: str, key: str, users: int, seconds: float, connections: int,
           workdir: Path) -> dict[str, Any]:
    """HTTP/2 over a plain port (h2c, prior knowledge) with nghttp2's h2load: one stream
    at a time per connection, as wrk keeps one request in flight per connection."""
    paths = workdir / "h2paths.txt"
    rng = __import__("random").Random(7)
    paths.write_text("".join(f"{url}{path.replace('{user}', f'u-{rng.randint(1, users)}')}\n"
                             for _ in range(20_000)))
    done = subprocess.run(
        ["h2load", "-t1", f"-c{connections}", "-m1", f"-D{seconds:g}", "-i", str(paths),
         "-H", f"Authorization: Bearer {key}"],
        capture_output=True, text=True, check=True,
    )
    out = done.stdout
    rate = float(re.search(r"finished in [^,]+, ([\d.]+) req/s", out).group(1))  # type: ignore[union-attr]
    succeeded = int(re.search(r"(\d+) succeeded", out).group(1))  # type: ignore[union-attr]
    failed = int(re.search(r"(\d+) failed", out).group(1))  # type: ignore[union-attr]
    line = next(x for x in out.splitlines() if x.startswith("time for request:"))
    mean = line.split()[5]
    to_ms = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    unit = re.sub(r"[\d.]", "", mean)
    return {"rate": rate, "requests": succeeded, "errors": failed,
            "mean_ms": float(re.sub(r"[a-z]", "", mean)) * to_ms[unit]}


BARE = "bare constant JSON (wrk)"


def run_mode(mode: str, args: argparse.Namespace, env: dict[str, str], key: str, var: Path,
             procs: list[subprocess.Popen[bytes]], redis_pid: int,
             clients: list[list[str]]) -> dict[str, dict[str, Any]]:
    api_port, bare_port = free_port(), free_port()
    api_proc = serve("api", api_port, env, var / f"api-{mode}.log", mode)
    bare_proc = serve("bare", bare_port, env, var / f"bare-{mode}.log", mode)
    procs += [api_proc, bare_proc]
    api_url, bare_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{bare_port}"
    headers = {"Authorization": f"Bearer {key}"}
    for path in ("/v1/users/u-42/offers", "/v1/users/u-42/recommendations"):
        body = httpx.get(api_url + path, headers=headers).json()
        assert body["personalized"] is True, body
    offers, recs = "/v1/users/{user}/offers", "/v1/users/{user}/recommendations"
    runs: dict[str, dict[str, Any]] = {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # warm up both servers (connections, caches, the interpreter)
        wrk(bare_url, offers, key, args.users, 2, args.connections, work)
        wrk(api_url, offers, key, args.users, 2, args.connections, work)
        # the three throughput runs alternate, round after round, so that a slower stretch
        # of a shared machine hits the bare endpoint and ours alike; each figure printed is
        # the round with the median rate, and each ratio the median of the rounds' ratios
        watch = {"server": api_proc.pid, "redis": redis_pid}
        rounds: dict[str, list[dict[str, Any]]] = {
            BARE: [], "GET offers (wrk)": [], "GET recommendations (wrk)": []}
        for _ in range(args.rounds):
            rounds[BARE].append(wrk(bare_url, offers, key, args.users, args.seconds,
                                    args.connections, work, {"server": bare_proc.pid}))
            rounds["GET offers (wrk)"].append(wrk(
                api_url, offers, key, args.users, args.seconds, args.connections, work,
                watch))
            rounds["GET recommendations (wrk)"].append(wrk(
                api_url, recs, key, args.users, args.seconds, args.connections, work,
                watch))
        if mode in ("hypercorn", "granian") and shutil.which("h2load"):
            for _ in range(args.rounds):
                rounds.setdefault("GET offers (h2load, h2c)", []).append(h2load(
                    api_url, offers, key, args.users, args.seconds, args.connections, work))
        for name, results in rounds.items():
            if "h2load" in name:
                runs[name] = sorted(results, key=lambda r: r["rate"])[len(results) // 2]
                runs[name]["round_rates"] = [r["rate"] for r in results]
                continue
            runs[name] = sorted(results, key=lambda r: r["rate"])[len(results) // 2]
            runs[name]["round_rates"] = [r["rate"] for r in results]
            if name != BARE:
                runs[name]["round_ratios"] = [
                    r["rate"] / b["rate"] for r, b in zip(results, rounds[BARE], strict=True)]
    for client in clients:
        tag = "" if client is clients[0] else f" ({client_name(client)})"
        runs[f"bare constant JSON @ {args.rate}/s{tag}"] = fixed_rate(
            client, bare_url, offers, key, args.users, args.rate, args.seconds)
        for name, path, word in ((f"GET offers @ {args.rate}/s{tag}", offers, "offers"),
                                 (f"GET recommendations @ {args.rate}/s{tag}", recs,
                                  "recommendations")):
            before = server_over_10ms(api_url, word)
            runs[name] = fixed_rate(client, api_url, path, key, args.users, args.rate,
                                    args.seconds)
            after = server_over_10ms(api_url, word)
            runs[name]["server_over_10ms"] = after[0] - before[0]
            runs[name]["server_requests"] = after[1] - before[1]
    metrics = httpx.get(api_url + "/metrics").text
    fallbacks = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                    if line.startswith("decisions_api_fallback_total{"))
    for proc in (api_proc, bare_proc):
        proc.terminate()
        proc.wait(10)

    server = mode if mode in ("hypercorn", "granian") else "uvicorn"
    print(f"\n== server mode: {mode} ({server} {' '.join(SERVER_MODES[mode])}, 1 worker) ==")
    print(f"{'run':<50} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} "
          f"{'max ms':>8} {'errors':>7}")
    for name, r in runs.items():
        if "h2load" in name:
            print(f"{name:<50} {r['rate']:>9,.0f}   (mean {r['mean_ms']:.2f} ms; h2load "
                  f"reports no percentiles) {r['errors']:>7}; rounds "
                  + ", ".join(f"{x:,.0f}" for x in r["round_rates"]))
            continue
        print(f"{name:<50} {r['rate']:>9,.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
              f"{r['p99_9_ms']:>9.2f} {r['max_ms']:>8.2f} {r['errors']:>7}")
    print(f"{os.cpu_count()} CPUs, load average {load_before:.1f} before; wrk: 1 thread, "
          f"{args.connections} keep-alive connections, {args.seconds:g}s per run, "
          f"{args.rounds} alternating rounds (the median round shown); "
          f"fallback answers during the runs: {fallbacks:.0f}")
    bare_cpu = runs[BARE]["server_cpu_us"]
    print(f"bare constant JSON: {bare_cpu:.0f} µs of server CPU per request "
          f"(one core: {1e6 / bare_cpu:,.0f} req/s); rounds: "
          + ", ".join(f"{rate:,.0f}" for rate in runs[BARE]["round_rates"]))
    for name in ("GET offers (wrk)", "GET recommendations (wrk)"):
        r = runs[name]
        ratios = sorted(r["round_ratios"])
        print(f"{name}: {r['rate']:,.0f} req/s; {ratios[len(ratios) // 2]:.0%} of the bare "
              f"endpoint (median of the rounds' ratios; rounds "
              + ", ".join(f"{x:.0%}" for x in r["round_ratios"])
              + f") (targets: ≥ 3,000 req/s, ≥ 60%); {r['server_cpu_us']:.0f} µs of API CPU + "
              f"{r['redis_cpu_us']:.0f} µs of Redis CPU per request (one core for the API: "
              f"{1e6 / r['server_cpu_us']:,.0f} req/s = {bare_cpu / r['server_cpu_us']:.0%} "
              f"of the bare endpoint's)")
    for name, r in runs.items():
        if "server_over_10ms" in r:
            print(f"{name}: p99 {r['p99_ms']:.2f} ms (target < 10 ms); in the app itself "
                  f"{r['server_over_10ms']:.0f} of {r['server_requests']:.0f} requests took "
                  f"over 10 ms (the rest of the tail waited in the event loop, the OS or the "
                  f"client)")
    print(f"open-loop client{'s' if len(clients) > 1 else ''}: "
          f"{', then '.join(client_name(c) for c in clients)}; 32 keep-alive connections")
    lags = ", ".join(f"{r['client_lag_p99_ms']:.2f} / {r['client_lag_max_ms']:.2f}"
                     for r in runs.values() if "client_lag_max_ms" in r)
    if lags:
        print(f"openloop.c's own lateness in queueing a due request, p99 / max ms (bare, "
              f"offers, recommendations): {lags}")
    runs["_meta"] = {"fallbacks": fallbacks, "load_before": load_before}
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds of the three throughput runs")
    parser.add_argument("--server", choices=[*SERVER_MODES, *GROUPS], default="both",
                        help="both: uvicorn standard and pure-python; compare: uvicorn "
                             "standard, hypercorn and granian (HTTP/1.1 with wrk, h2c with "
                             "h2load)")
    parser.add_argument("--redis-timeout-ms", type=int, default=1000,
                        help="the API's Redis timeout (production default: 50)")
    parser.add_argument("--client", choices=["c", "python", "both"], default="c",
                        help="the fixed-rate client: benchmarks/openloop.c (compiled with "
                             "gcc; the Python one when no compiler is found), "
                             "benchmarks/api_load.py, or both in turn on the same servers")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install -y wrk")

    var = ROOT / "var" / f"bench-api-{os.getpid()}"
    stack = EmbeddedStack(var)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        server_url = stack.start_postgres()
        redis_url = stack.start_redis()
        database_url = migrate.create_database(server_url, "decisions_bench")
        engine = make_engine(database_url, pool_size=1)
        catalog.import_file(engine, DEMO_CATALOG)
        key, _ = apikeys.create_key(engine, "benchmark", ["offers:read"])
        engine.dispose()
        clients = []
        if args.client in ("c", "both"):
            compiled = build_openloop(var)
            if compiled is None:
                print("no C compiler (gcc, cc or $CC) found: the fixed-rate phase uses "
                      "benchmarks/api_load.py, whose own lateness on a small machine adds "
                      "to the latency tail it reports")
            clients.append(compiled or PYTHON_CLIENT)
        if args.client == "python" or (args.client == "both" and clients != [PYTHON_CLIENT]):
            clients.append(PYTHON_CLIENT)
        started = time.perf_counter()
        seed(redis_url, args.users)
        print(f"seeded {args.users} users in {time.perf_counter() - started:.1f}s "
              f"({redis.Redis.from_url(redis_url).dbsize()} keys)")

        env = {**os.environ, "DECISIONS_DATABASE_URL": database_url,
               "DECISIONS_REDIS_URL": redis_url,
               "DECISIONS_KAFKA_BOOTSTRAP": "127.0.0.1:9",  # reads never touch Kafka
               "DECISIONS_RATE_LIMIT_PER_SECOND": "10000000",
               "DECISIONS_RATE_LIMIT_BURST": "10000000", "DECISIONS_LOG_LEVEL": "WARNING",
               # measure the personalized path even when a saturated server (or a busy
               # machine) answers slowly: with the 50 ms default, such stalls would switch
               # reads to the cheaper fallback and flatter the figures
               "DECISIONS_REDIS_TIMEOUT_MS": str(args.redis_timeout_ms)}
        modes = GROUPS.get(args.server, [args.server])
        results: dict[str, dict[str, dict[str, Any]]] = {}
        for mode in modes:
            results[mode] = run_mode(mode, args, env, key, var, procs,
                                     stack.children[-1].pid, clients)
        print(f"\nload average {os.getloadavg()[0]:.1f} (1 min) after the runs; "
              "the figures are only as quiet as the machine was")
        print(json.dumps(results))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        stack.stop()
        shutil.rmtree(var, ignore_errors=True)


if __name__ == "__main__":
    main()
