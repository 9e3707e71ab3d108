"""Client CPU of the two hot paths, the project's RESP clients against redis-py's, on one
Redis and on a three-node Redis Cluster (embedded Valkey, started here).

- worker: pipelines of 500 "events", each a script call on the user's hash tag, a SET of
  the user's dedup key and an HSET of the user's recommendation (the shape of a batch);
  ``RawPipeline`` vs redis-py's ``pipeline()`` (``ClusterPipeline`` on the cluster);
- API: requests of ``GET d:cust:{u}`` + ``HVALS d:offers:{u}`` in one round trip, 64 in
  flight; ``FastRedis`` / ``ClusterFastRedis`` vs ``redis.asyncio`` (``RedisCluster``).

CPU is this process's (``time.process_time``: client work and its system calls), per
event or request; the servers' is not counted. Rounds alternate the clients.

    flock /tmp/bench.lock .venv/bin/python benchmarks/redis_clients.py
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from decisions.cli.stack.cluster import EmbeddedCluster  # noqa: E402
from decisions.cli.stack.embedded import start_redis  # noqa: E402
from decisions.cli.stack.process import Child  # noqa: E402
from decisions.core import keys  # noqa: E402
from decisions.core.resp.multiplexed import FastRedis, pack  # noqa: E402
from decisions.core.resp.multiplexed_cluster import ClusterFastRedis  # noqa: E402
from decisions.core.resp.pipeline import RawPipeline, RawScript  # noqa: E402

SCRIPT = "redis.call('HINCRBY', 'd:st:' .. KEYS[1], 'n', 1) return 1"
BATCH = 500


def worker_raw(client: redis.Redis, users: list[str], script: RawScript) -> None:
    pipe = RawPipeline(client)
    for user in users:
        pipe.script(script, (keys.tag(user),), ("e1", 1234567890, "page_view"))
        pipe.command("SET", keys.seen(user, "e1"), "done", "EX", 3600)
        pipe.command("HSET", keys.recs(user), "default", '{"products":["p-1","p-2"]}')
    pipe.execute()


def worker_redispy(client: Any, users: list[str], sha: str) -> None:
    pipe = client.pipeline(transaction=False)
    for user in users:
        pipe.evalsha(sha, 1, keys.tag(user), "e1", 1234567890, "page_view")
        pipe.set(keys.seen(user, "e1"), "done", ex=3600)
        pipe.hset(keys.recs(user), "default", '{"products":["p-1","p-2"]}')
    pipe.execute()


def cpu_per(fn: Callable[[], None], units: int, rounds: int) -> float:
    fn()  # warm (connections, scripts)
    started = time.process_time()
    for _ in range(rounds):
        fn()
    return (time.process_time() - started) / (units * rounds) * 1e6


def worker_figures(url: str, cluster: bool, rounds: int) -> dict[str, float]:
    client: Any = redis.RedisCluster.from_url(url) if cluster else redis.Redis.from_url(url)
    script = RawScript(SCRIPT)
    sha = client.script_load(SCRIPT)
    users = [f"user-{i}" for i in range(BATCH)]
    out: dict[str, float] = {"ours": 0.0, "redis-py": 0.0}
    for _ in range(3):  # alternating
        out["ours"] += cpu_per(lambda: worker_raw(client, users, script), BATCH, rounds) / 3
        out["redis-py"] += cpu_per(lambda: worker_redispy(client, users, sha), BATCH,
                                   rounds) / 3
    client.close()
    return out


async def api_ours(client: Any, users: list[str]) -> None:
    payloads = [pack(("GET", keys.customer(u))) + pack(("HVALS", keys.offers(u)))
                for u in users]
    await asyncio.gather(*(client.request(p, 2) for p in payloads))


async def api_redispy(client: Any, users: list[str]) -> None:
    async def one(user: str) -> Any:
        pipe = client.pipeline(transaction=False)
        pipe.get(keys.customer(user))
        pipe.hvals(keys.offers(user))
        return await pipe.execute()

    await asyncio.gather(*(one(u) for u in users))


async def api_figures(url: str, cluster: bool, requests: int) -> dict[str, float]:
    users = [f"user-{i}" for i in range(64)]
    ours: Any = ClusterFastRedis(url, timeout=1.0) if cluster else FastRedis(url, timeout=1.0)
    theirs: Any = (aioredis.RedisCluster.from_url(url) if cluster
                   else aioredis.Redis.from_url(url))
    out: dict[str, float] = {"ours": 0.0, "redis-py": 0.0}
    rounds = max(1, requests // len(users))
    for _ in range(3):
        for name, fn, client in (("ours", api_ours, ours), ("redis-py", api_redispy, theirs)):
            await fn(client, users)
            started = time.process_time()
            for _ in range(rounds):
                await fn(client, users)
            out[name] += (time.process_time() - started) / (rounds * len(users)) * 1e6 / 3
    await ours.close()
    await theirs.aclose()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="worker batches per client")
    parser.add_argument("--requests", type=int, default=20_000, help="API requests per client")
    args = parser.parse_args()
    var = ROOT / "var" / "bench-redis-clients"
    children: list[Child] = []
    cluster = EmbeddedCluster(var / "cluster")
    try:
        urls = {"single": start_redis(var / "single", children), "cluster": cluster.start(3)}
        for mode, url in urls.items():
            worker = worker_figures(url, mode == "cluster", args.rounds)
            api = asyncio.run(api_figures(url, mode == "cluster", args.requests))
            print(f"{mode:7} worker CPU per event: ours {worker['ours']:.1f} µs, redis-py "
                  f"{worker['redis-py']:.1f} µs | API CPU per request: ours {api['ours']:.1f}"
                  f" µs, redis-py {api['redis-py']:.1f} µs")
    finally:
        cluster.stop()
        for child in children:
            child.stop()
        shutil.rmtree(var, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
