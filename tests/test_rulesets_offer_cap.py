"""per_user_cap of a discount rule: at most N offers of that rule to one user in 30 days
(on top of one active offer per rule at a time), enforced where offers are stored."""

from __future__ import annotations

from typing import Any

import redis

from decisions.core import keys
from decisions.runtime.offers import OfferStore

DAY_MS = 86_400_000
T0 = 1_795_000_000_000


def offer(n: int, cap: int | None, at: int) -> dict[str, Any]:
    data: dict[str, Any] = {"offer_id": f"o-{n}", "ruleset": "shop", "rule": "welcome",
                            "expires_ms": at + 3_600_000}
    if cap is not None:
        data["per_user_cap"] = cap
    return data


def stored(client: redis.Redis) -> list[str]:
    return sorted(k.decode() for k in client.hkeys(keys.offers("u-cap")))


def test_cap_counts_offers_of_a_rule_over_30_days(redis_client: redis.Redis) -> None:
    store = OfferStore(redis_client)

    def put(n: int, at: int, cap: int | None = 2) -> None:
        store.store_offer(redis_client, "u-cap", offer(n, cap, at), at, 3600)

    put(1, T0)
    put(2, T0 + 60_000)  # the first is still active: refused
    assert stored(redis_client) == ["o-1"]
    put(2, T0 + 2 * DAY_MS)  # expired: a second offer within the cap
    put(3, T0 + 4 * DAY_MS)  # a third within 30 days: over the cap
    assert stored(redis_client) == ["o-1", "o-2"]
    put(3, T0 + 31 * DAY_MS)  # the first one is now older than 30 days
    assert stored(redis_client) == ["o-1", "o-2", "o-3"]
    put(3, T0 + 31 * DAY_MS)  # a replay of the same offer changes nothing
    assert redis_client.hget(keys.offer_rules("u-cap"), "shop/welcome|times") == (
        f"{T0 + 2 * DAY_MS},{T0 + 31 * DAY_MS}".encode())
    assert redis_client.ttl(keys.offer_rules("u-cap")) > 30 * 86_400


def test_offers_without_a_cap_are_only_limited_to_one_active(redis_client: redis.Redis) -> None:
    store = OfferStore(redis_client)
    for n in range(5):
        at = T0 + n * 2 * 3_600_000
        store.store_offer(redis_client, "u-cap", offer(n, None, at), at, 3600)
    assert len(stored(redis_client)) == 5
    assert redis_client.ttl(keys.offer_rules("u-cap")) <= 3600
