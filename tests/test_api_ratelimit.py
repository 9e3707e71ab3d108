"""The per-key rate limit with token leases, against the real Redis of the session.

A process leases a block of tokens in one script call and spends them locally; the limit
must still never be exceeded: in any time span, at most ``burst + rate × span`` requests of
a key admitted, whatever number of API processes share its bucket. Each check below
records when every admitted request started and ended (its token was spent in between)
and checks that bound over every window.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import replace

from starlette.testclient import TestClient

from api.app import create_app
from api.ratelimit import LEASE_SECONDS, MAX_LEASE, lease_size
from api.store import RedisStore
from decisions.core.settings import Settings
from decisions.runtime import apikeys
from tests.api_helpers import KeyMaker, auth

pytest_plugins = ["tests.api_fixtures"]

Admitted = list[tuple[float, float]]  # (start, end) of each admitted request


def worst_excess(admitted: Admitted, rate: float, burst: int) -> float:
    """The most any window exceeds ``burst + rate × its length`` by (≤ 0: never exceeded).

    A window runs from one admitted request's start to another's end and counts the
    requests that started and ended inside it.
    """
    worst = float("-inf")
    for start, _ in admitted:
        for _, end in admitted:
            if end < start:
                continue
            inside = sum(1 for s, e in admitted if s >= start and e <= end)
            worst = max(worst, inside - burst - rate * (end - start))
    return worst


def test_lease_size() -> None:
    assert lease_size(1.0, 3) == 1  # a block of one token: the exact per-request limit
    assert lease_size(20.0, 100) == 1
    assert lease_size(200.0, 400) == 10  # 50 ms of the rate
    assert lease_size(200.0, 4) == 4  # never more than the burst
    assert lease_size(1e7, 10**7) == MAX_LEASE


def test_two_processes_hammering_never_exceed_the_limit(settings: Settings) -> None:
    """Two stores (two API processes) reading concurrently, in bursts and pauses: reads
    paid by leased, reserved and freshly asked tokens stay within the bucket."""
    rate, burst = 200.0, 20
    limited = replace(settings, rate_limit_per_second=rate, rate_limit_burst=burst)
    admitted: Admitted = []
    refused = 0

    async def scenario() -> None:
        nonlocal refused
        stores = [RedisStore(limited), RedisStore(limited)]
        rng = random.Random(5)

        async def read(store: RedisStore) -> None:
            nonlocal refused
            start = time.monotonic()
            view = await store.offers_view("hammer", "u-1")
            if view.verdict.allowed:
                admitted.append((start, time.monotonic()))
            else:
                refused += 1

        try:
            deadline = time.monotonic() + 0.8
            while time.monotonic() < deadline:
                await asyncio.gather(*(read(stores[i % 2]) for i in range(rng.randint(1, 40))))
                # pauses let the bucket refill while leases are held, unspent
                await asyncio.sleep(rng.choice([0, 0, 0.005, 0.03, 0.06]))
        finally:
            for store in stores:
                await store.close()

    asyncio.run(scenario())
    assert refused > 0 and len(admitted) > burst  # the limit was reached, and bound
    assert worst_excess(admitted, rate, burst) <= 0


def test_held_leases_lower_the_bucket_ceiling(
    api_settings: Settings, demo_catalog: object, make_key: KeyMaker
) -> None:
    """A busy app leases a block, holds it while the bucket refills, then spends it while a
    second app drains the bucket: together never more than the burst at once (a bucket
    refilled to its full burst beside the held lease would admit nearly twice as much)."""
    rate, burst = 200.0, 10
    assert lease_size(rate, burst) == burst
    limited = replace(api_settings, rate_limit_per_second=rate, rate_limit_burst=burst)
    key = make_key("offers:read")
    prefix = apikeys.split_key(key)[0]  # type: ignore[index]
    admitted: Admitted = []
    with TestClient(create_app(limited)) as first, TestClient(create_app(limited)) as second:

        def get(client: TestClient) -> None:
            start = time.monotonic()
            if client.get("/v1/users/u/offers", headers=auth(key)).status_code == 200:
                admitted.append((start, time.monotonic()))

        get(first)
        lease = first.app.state.api.redis.lease(prefix)
        for _ in range(4 * burst):  # as if first had been busy: it now leases a full block
            lease.count(time.monotonic())
        get(first)  # leases what the bucket holds (9), spends one
        assert lease.tokens >= 1
        time.sleep(LEASE_SECONDS / 2)  # the bucket refills while first holds its lease
        for _ in range(15):
            get(first)
            get(second)
    assert len(admitted) >= burst
    assert worst_excess(admitted, rate, burst) <= 0


def test_a_key_used_lightly_on_many_processes_loses_no_tokens(settings: Settings) -> None:
    """Four processes each serving a key once in a while ask for one token at a time: a
    client at a fraction of its rate is never refused, though blocks of 10 would be lost
    (each unspent within its lease) four times faster than the bucket refills."""
    rate, burst = 200.0, 10
    assert lease_size(rate, burst) == 10
    limited = replace(settings, rate_limit_per_second=rate, rate_limit_burst=burst)

    async def scenario() -> list[bool]:
        stores = [RedisStore(limited) for _ in range(4)]
        verdicts: list[bool] = []
        try:
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:  # ~80 reads a second: 40 % of the rate
                for store in stores:
                    verdicts.append((await store.offers_view("light", "u-1")).verdict.allowed)
                await asyncio.sleep(0.05)
        finally:
            for store in stores:
                await store.close()
        return verdicts

    verdicts = asyncio.run(scenario())
    assert len(verdicts) > 40 and all(verdicts)


def test_a_low_rate_key_is_limited_exactly_across_two_apps(
    api_settings: Settings, demo_catalog: object, make_key: KeyMaker
) -> None:
    limited = replace(api_settings, rate_limit_per_second=1.0, rate_limit_burst=2)
    key = make_key("offers:read")
    with TestClient(create_app(limited)) as first, TestClient(create_app(limited)) as second:
        def status(client: TestClient) -> int:
            return client.get("/v1/users/u/offers", headers=auth(key)).status_code

        assert [status(first), status(second)] == [200, 200]
        refused = second.get("/v1/users/u/recommendations", headers=auth(key))
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert status(first) == 429
        time.sleep(1.05)  # one token refilled, for whichever app asks first
        assert [status(second), status(first)] == [200, 429]
