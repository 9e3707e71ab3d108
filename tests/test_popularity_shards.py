"""Top sellers, most viewed and returns sharded over 16 hash tags (#20): a reader's merge
of the shards' top K is the top K of one sorted set of the summed scores; the single keys
of before are moved into the shards when a worker starts."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decisions.core import keys
from decisions.core.events import Event
from decisions.core.resp.pipeline import RawPipeline, RawScript
from decisions.core.settings import Settings
from decisions.runtime import next_click
from decisions.runtime.recommend import (
    INCREMENT,
    PopularityBatch,
    Recommender,
    move_single_keys,
    top_of,
)
from tests.helpers import running_worker, wait_for

SINGLE_TOP, SINGLE_VIEWED = "t:top", "t:viewed"  # the reference: one sorted set each
T0 = datetime(2026, 12, 1, tzinfo=UTC)
# (event type, product, units): few products and units, so scores tie often
_ACTION = st.tuples(st.sampled_from(["purchase", "product_view"]),
                    st.sampled_from([f"p-{i}" for i in range(30)]), st.integers(1, 3))


def write(client: redis.Redis, batches: Sequence[Sequence[tuple[str, str, int]]]) -> None:
    """Each batch as the worker writes it (``PopularityBatch``), and the same units and
    views into one sorted set each (``SINGLE_TOP``, ``SINGLE_VIEWED``)."""
    script = RawScript(INCREMENT)
    for batch in batches:
        popularity = PopularityBatch()
        single = RawPipeline(client)
        for etype, product, units in batch:
            if etype == "purchase":
                props = {"items": [{"product_id": product, "quantity": units}]}
                single.command("ZINCRBY", SINGLE_TOP, units, product)
            else:
                props = {"product_id": product}
                single.command("ZINCRBY", SINGLE_VIEWED, 1, product)
            popularity.add(Event(uuid.uuid4().hex, etype, "u", T0, props), {})
        pipe = RawPipeline(client)
        popularity.queue(pipe, script)
        if len(pipe):
            pipe.execute()
        if len(single):
            single.execute()


def single(client: redis.Redis, key: str, k: int) -> list[tuple[str, float]]:
    return [(m.decode(), s) for m, s in client.zrevrange(key, 0, k - 1, withscores=True)]


def sharded(client: redis.Redis, shards: tuple[str, ...], k: int) -> list[tuple[str, float]]:
    """What the API reads: every shard's top k in one pipeline, merged."""
    pipe = RawPipeline(client)
    for key in shards:
        pipe.command("ZREVRANGE", key, 0, k - 1, "WITHSCORES")
    return top_of(pipe.execute(), k)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(_ACTION, max_size=20), min_size=1, max_size=4),
       k=st.integers(1, 35))
def test_the_merged_top_k_is_the_top_k_of_the_summed_scores(
        redis_client: redis.Redis, batches: list[list[tuple[str, str, int]]], k: int) -> None:
    redis_client.flushdb()
    write(redis_client, batches)
    for shards, one in ((keys.TOP_KEYS, SINGLE_TOP), (keys.VIEWED_KEYS, SINGLE_VIEWED)):
        want = single(redis_client, one, k)  # ties in Redis' own order
        assert sharded(redis_client, shards, k) == want
        # the worker's recommender, read on demand and prefetched
        assert Recommender(redis_client)._ranked(shards, k - 1) == want
        prefetched = Recommender(redis_client)
        prefetched.prefetch([("u", {}, "top_viewed")])
        assert prefetched._ranked(shards, k - 1) == want
    products = {p for batch in batches for _, p, _ in batch}
    for product in products:  # each product in one shard of each
        for shards in (keys.TOP_KEYS, keys.VIEWED_KEYS):
            holding = [s for s in shards if redis_client.zscore(s, product) is not None]
            assert holding in ([], [keys.top_seller(product) if shards == keys.TOP_KEYS
                                    else keys.viewed(product)])


def test_a_batch_adds_its_returns_to_one_shard_and_readers_sum_them(
        redis_client: redis.Redis) -> None:
    script = RawScript(INCREMENT)
    for i, session in enumerate((["p-2", "p-1"], ["p-1", "p-2", "p-1"], ["p-3", "p-1"])):
        batch = PopularityBatch()
        batch.add(Event(f"e{i}", "product_view", f"user-{i}", T0, {"product_id": session[0]}),
                  {"session_products": session})
        pipe = RawPipeline(redis_client)
        batch.queue(pipe, script)
        pipe.execute()
        assert redis_client.hget(keys.returns(f"user-{i}"), "next") is not None
    # 3 next clicks, one of them back to p-1
    assert Recommender(redis_client).return_share() == next_click.return_share(3, 1)


def test_the_single_keys_of_before_are_moved_into_their_shards(
        redis_client: redis.Redis) -> None:
    moves_single_keys(redis_client)


def moves_single_keys(redis_client: redis.Redis) -> None:
    """(On one Redis, and on the cluster in tests/test_redis_cluster.py.)"""
    write(redis_client, [[("purchase", "p-1", 2), ("product_view", "p-1", 1)]])
    old_top = {f"p-{i}": float(i) for i in range(2500)}  # more than one chunk
    redis_client.zadd(keys.TOP, old_top)
    redis_client.zadd(keys.VIEWED, {"p-1": 4, "p-2": 1})
    redis_client.hset(keys.RETURNS, mapping={"next": 10, "return": 3})
    redis_client.hset(keys.RETURNS_KEYS[5], mapping={"next": 1})

    assert move_single_keys(redis_client) == 2500 + 2 + 2
    assert not redis_client.exists(keys.TOP, keys.VIEWED, keys.RETURNS)
    old_top["p-1"] += 2
    assert sharded(redis_client, keys.TOP_KEYS, 3000) == sorted(
        old_top.items(), key=lambda r: (r[1], r[0]), reverse=True)
    assert sharded(redis_client, keys.VIEWED_KEYS, 10) == [("p-1", 5.0), ("p-2", 1.0)]
    assert Recommender(redis_client).return_share() == next_click.return_share(11, 3)
    assert move_single_keys(redis_client) == 0  # nothing left: nothing moved twice


def test_a_starting_worker_moves_them(settings: Settings, redis_client: redis.Redis) -> None:
    redis_client.zadd(keys.TOP, {"p-7": 3})
    with running_worker(settings):
        wait_for(lambda: not redis_client.exists(keys.TOP))
    assert redis_client.zscore(keys.top_seller("p-7"), "p-7") == 3
