"""The product on a three-node Valkey Cluster: worker, API and offers end to end, a worker
killed and restarted, a node restarted (reads answer fallbacks meanwhile, never 5xx)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine
from starlette.testclient import TestClient

from api.app import create_app
from api.store import RedisStore
from decisions.cli.stack.cluster import EmbeddedCluster
from decisions.core import keys
from decisions.core.errors import ConfigError
from decisions.core.events import Event
from decisions.core.resp import cluster
from decisions.core.resp.multiplexed import RespError
from decisions.core.resp.pipeline import RawPipeline, RawScript
from decisions.core.settings import Settings
from decisions.runtime import next_click
from decisions.runtime.recommend import INCREMENT, PopularityBatch, Recommender
from tests import (
    test_end_to_end,
    test_popularity_shards,
    test_worker_processes,
    test_worker_support,
)
from tests.api_helpers import KeyMaker, auth, offer, store_offer

pytest_plugins = ["tests.api_fixtures"]


def test_the_cluster_is_found_from_one_node(redis_cluster: EmbeddedCluster,
                                            cluster_client: redis.Redis) -> None:
    for node in redis_cluster.nodes:
        assert cluster.is_cluster(node.url, "auto")
        assert cluster.is_cluster(node.url, "yes")
        assert not cluster.is_cluster(node.url, "no")
    client = cluster.connect(redis_cluster.nodes[1].url, "auto")
    assert cluster.is_cluster_client(client)
    # users' keys land on every node: no node holds all the state
    for i in range(300):
        client.hset(keys.state(f"u{i}"), "x", 1)
    held = [redis.Redis(port=n.port).dbsize() for n in redis_cluster.nodes]
    assert sum(held) == 300 and min(held) > 50, held


def test_raw_pipeline_routes_by_slot_and_splits_mget(cluster_client: redis.Redis) -> None:
    users = [f"user-{i}" for i in range(50)]
    pipe = RawPipeline(cluster_client)
    for user in users:
        pipe.command("SET", keys.customer(user), user)
    pipe.command("MGET", *[keys.customer(u) for u in users], keys.customer("nobody"))
    pipe.command("HINCRBY", keys.RETURNS, "next", 1)
    replies = pipe.execute()
    assert replies[:50] == [b"OK"] * 50
    assert replies[50] == [u.encode() for u in users] + [None]
    assert replies[51] == 1


def test_high_value_cart_offer_end_to_end_on_the_cluster(
        cluster_settings: Settings, cluster_client: redis.Redis) -> None:
    test_end_to_end.test_high_value_cart_offer_end_to_end(cluster_settings, cluster_client)


def test_workers_killed_and_restarted_on_the_cluster(
        cluster_settings: Settings, clean_db: Engine, cluster_client: redis.Redis,
        tmp_path: Path) -> None:
    """Three workers on eight partitions, one SIGKILLed mid-batch and one stopped, both
    started again: nothing lost or doubled, with the state on the cluster."""
    test_worker_processes.three_workers_killed_and_restarted(
        cluster_settings, clean_db, cluster_client, tmp_path)


def _get(client: TestClient, path: str, key: str) -> dict[str, Any]:
    resp = client.get(path, headers=auth(key))
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def test_api_reads_on_the_cluster_and_through_a_node_restart(
        cluster_settings: Settings, demo_catalog: object, make_key: KeyMaker,
        redis_cluster: EmbeddedCluster, cluster_client: redis.Redis) -> None:
    users = [f"shopper-{i}" for i in range(12)]  # on every node
    for user in users:
        store_offer(cluster_client, user, offer(user, "a"))
    nodes = {cluster_client.keyslot(keys.offers(u)) // (16384 // 3) for u in users}
    assert len(nodes) == 3
    key = make_key("offers:read")
    settings = replace(cluster_settings, rate_limit_per_second=1000.0, rate_limit_burst=1000,
                       breaker_reset_seconds=0.2, redis_timeout_ms=200)
    with TestClient(create_app(settings)) as client:
        for user in users:
            body = _get(client, f"/v1/users/{user}/offers", key)
            assert body["personalized"] is True and body["offers"][0]["rule"] == "a"
        redis_cluster.stop_node(1)
        fallbacks = 0
        try:
            for _ in range(3):
                for user in users:  # every read answers: offers, or the fallback
                    body = _get(client, f"/v1/users/{user}/offers", key)
                    assert body["personalized"] is False or body["offers"]
                    fallbacks += not body["personalized"]
                recs = _get(client, f"/v1/users/{users[0]}/recommendations", key)
                assert "products" in recs
        finally:
            redis_cluster.restart_node(1)
        assert fallbacks >= 3  # at least the stopped node's users, each round
        redis_cluster.wait_ok()
        deadline = time.monotonic() + 20
        while True:  # the service resumes by itself: every user's offers again
            bodies = [_get(client, f"/v1/users/{u}/offers", key) for u in users]
            if all(b["personalized"] for b in bodies) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert all(b["personalized"] and b["offers"][0]["rule"] == "a" for b in bodies)


def _exits_with_one_line(proc: Any, log: Path, *needles: str) -> str:
    try:
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            test_worker_support.stop(proc)
    text = log.read_text()
    assert code == 2, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    for needle in needles:
        assert needle in text, text[-3000:]
    return text


def test_a_worker_told_no_cluster_stops_with_one_line(
        cluster_settings: Settings, clean_db: Engine, tmp_path: Path) -> None:
    settings = test_worker_support.fast(replace(cluster_settings, redis_cluster="no"))
    test_worker_support.publish(settings, test_worker_support.offer_ruleset())
    events, _ = test_worker_processes.shop_stream("m", 30)  # users on every node
    log = tmp_path / "worker.log"
    worker = test_worker_support.start_worker(settings, log)
    test_worker_support.produce(settings, events)
    text = _exits_with_one_line(worker, log, "is a cluster node, but DECISIONS_REDIS_CLUSTER=no")
    assert "dead-lettered" not in text  # no record paid for the misconfiguration


def test_a_worker_told_cluster_on_a_single_redis_stops_with_one_line(
        settings: Settings, tmp_path: Path) -> None:
    settings = test_worker_support.fast(replace(settings, redis_cluster="yes"))
    log = tmp_path / "worker.log"
    worker = test_worker_support.start_worker(settings, log)
    _exits_with_one_line(worker, log, "DECISIONS_REDIS_CLUSTER=yes", "is no cluster node",
                         "set DECISIONS_REDIS_CLUSTER=no")


def test_the_api_told_no_cluster_serves_fallbacks_and_says_why_once(
        cluster_settings: Settings, demo_catalog: object, make_key: KeyMaker,
        cluster_client: redis.Redis, caplog: Any) -> None:
    users = [f"shopper-{i}" for i in range(12)]
    for user in users:
        store_offer(cluster_client, user, offer(user, "a"))
    key = make_key("offers:read")
    settings = replace(cluster_settings, redis_cluster="no", rate_limit_per_second=1000.0,
                       rate_limit_burst=1000)
    with TestClient(create_app(settings)) as client:
        bodies = [_get(client, f"/v1/users/{u}/offers", key) for u in users * 2]
    assert any(not b["personalized"] and b["reason"] == "redis_unavailable" for b in bodies)
    lines = [r.getMessage() for r in caplog.records if "check DECISIONS_REDIS_CLUSTER" in
             r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("API: Redis:"), lines


@pytest.mark.parametrize(("error", "setting"), [
    (redis.ResponseError("CROSSSLOT Keys in request don't hash to the same slot"),
     "DECISIONS_REDIS_CLUSTER"),
    (redis.ResponseError("MOVED 3999 127.0.0.1:7001"), "DECISIONS_REDIS_CLUSTER"),
    (RespError("WRONGTYPE Operation against a key holding the wrong kind of value"),
     "DECISIONS_REDIS_URL"),
    (redis.AuthenticationError("invalid username-password pair"), "DECISIONS_REDIS_URL"),
    (redis.ResponseError("NOAUTH Authentication required."), "DECISIONS_REDIS_URL"),
])
def test_misconfigurations_name_the_setting(error: Exception, setting: str) -> None:
    line = cluster.misconfiguration(error)
    assert line is not None and line.endswith(setting) and "\n" not in line


@pytest.mark.parametrize("error", [
    redis.ConnectionError("Connection refused"), redis.TimeoutError("timed out"),
    redis.ResponseError("CLUSTERDOWN The cluster is down"),
    redis.ResponseError("TRYAGAIN Multiple keys request during rehashing of slot"),
    redis.ResponseError("LOADING Redis is loading the dataset in memory"),
    RespError("ERR Error running script: attempt to compare nil with number"),
])
def test_passing_outages_and_record_faults_are_no_misconfiguration(error: Exception) -> None:
    assert cluster.misconfiguration(error) is None


def test_a_worker_that_meets_crossslot_stops_with_one_line() -> None:
    """A cross-slot reply mid-run stops the worker with one line (the loop calls this
    before it sorts an error into outage or a record's fault)."""
    from decisions.runtime.worker import loop

    with pytest.raises(ConfigError, match="the worker stops: Redis: .*CROSSSLOT.*check "
                                          "DECISIONS_REDIS_CLUSTER"):
        loop._stop_if_misconfigured(redis.ResponseError("CROSSSLOT Keys in request"))
    loop._stop_if_misconfigured(redis.ConnectionError("refused"))  # an outage: goes on


class _Sent:
    """The producer's one call the timer firer makes (a narrow stand-in: what it was
    asked to send is all this test checks)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, Any]]] = []

    def send_many(self, topic: str, records: list[tuple[str, dict[str, Any]]],
                  headers: Any = None) -> None:
        self.records.extend(records)


def _fires_from_every_shard(client: redis.Redis) -> None:
    from decisions.runtime.worker.timers import TimerFirer

    future = int(time.time() * 1000) + 3_600_000
    for i in range(40):  # users in every shard
        client.zadd(keys.deadlines(f"u-{i}"), {f"u-{i}|idle_30m": 1000 + i})
    client.zadd(keys.DEADLINES, {"u-old|idle_30m": 500})  # the one key of before #20
    client.zadd(keys.deadlines("u-later"), {"u-later|idle_30m": future})
    sent = _Sent()
    assert TimerFirer(client, "events").fire_due(sent, limit=1000) == 41  # type: ignore[arg-type]
    assert [u for u, _ in sent.records] == ["u-old", *[f"u-{i}" for i in range(40)]]
    assert sum(client.zcard(k) for k in keys.ALL_DEADLINE_KEYS) == 1  # only u-later's left
    assert client.zscore(keys.deadlines("u-later"), "u-later|idle_30m") == future


def test_timers_fire_from_every_shard_on_one_redis(redis_client: redis.Redis) -> None:
    _fires_from_every_shard(redis_client)


def test_timers_fire_from_every_shard_on_the_cluster(cluster_client: redis.Redis) -> None:
    # the shards' hash tags put them on every node
    per = 16384 // 3
    assert {min(2, cluster_client.keyslot(k) // per) for k in keys.DEADLINE_KEYS} == {0, 1, 2}
    _fires_from_every_shard(cluster_client)


def test_top_sellers_most_viewed_and_returns_spread_over_every_node(
        redis_cluster: EmbeddedCluster, cluster_client: redis.Redis) -> None:
    """Their shards land on all three nodes, and every reader's merge of them answers what
    one sorted set (one hash) of the same counts would."""
    batches = [[("purchase", f"p-{i}", 1 + i % 3) for i in range(b, 60, 4)]
               + [("product_view", f"p-{i % 25}", 1) for i in range(b, 90, 3)]
               for b in range(4)]
    test_popularity_shards.write(cluster_client, batches)
    script = RawScript(INCREMENT)
    for i in range(8):  # a batch's returns go to its first counted click's shard
        popularity = PopularityBatch()
        for j, session in enumerate((["p-2", "p-1"], ["p-1", "p-2", "p-1"])):
            popularity.add(Event(f"e{i}-{j}", "click", f"shopper-{i}-{j}",
                                 test_popularity_shards.T0, {"product_id": session[0]}),
                           {"session_products": session})
            cluster_client.zincrby(test_popularity_shards.SINGLE_VIEWED, 1, session[0])
        pipe = RawPipeline(cluster_client)
        popularity.queue(pipe, script)
        pipe.execute()
    for node in redis_cluster.nodes:
        held = redis.Redis(port=node.port)
        for name in ("top", "viewed", "returns"):
            assert held.keys(f"d:{name}:s*"), (node.port, name)
        held.close()

    recommender = Recommender(cluster_client)
    for strategy, single in (("top_sellers", test_popularity_shards.SINGLE_TOP),
                             ("top_viewed", test_popularity_shards.SINGLE_VIEWED)):
        want = [p for p, _ in test_popularity_shards.single(cluster_client, single, 10)]
        assert recommender.recommend("u", {}, strategy, 10) == (want, strategy)
    assert recommender.return_share() == next_click.return_share(16, 8)
    store = RedisStore(Settings(redis_url=redis_cluster.url))  # the API's snapshot read

    async def top_sellers() -> list[str]:
        try:
            return await store.top_sellers(40)
        finally:
            await store.close()

    assert asyncio.run(top_sellers()) == [
        p for p, _ in test_popularity_shards.single(
            cluster_client, test_popularity_shards.SINGLE_TOP, 40)]


def test_the_single_keys_of_before_are_moved_into_their_shards_on_the_cluster(
        cluster_client: redis.Redis) -> None:
    test_popularity_shards.moves_single_keys(cluster_client)
