"""A second ``decisions up --demo`` starts the demo shoppers afresh (issue #22, item 3)."""

from __future__ import annotations

import redis

from decisions.cli.demo_replay import demo_users, reset_shoppers, sample_events
from decisions.core import keys


def test_reset_forgets_only_the_demo_shoppers(redis_client: redis.Redis) -> None:
    users = demo_users()
    assert users[0] == "demo-1" and len(users) == 30
    assert {e["user_id"] for e in sample_events()} == set(users)
    for user in ("demo-12", "u-42"):
        redis_client.hset(keys.offers(user), "o1", '{"rule": "high-value-cart"}')
        redis_client.hset(keys.offer_rules(user), "storefront/high-value-cart", "o1")
        redis_client.hset(keys.state(user), "cart_value", 250)
        redis_client.zadd(keys.deadlines(user), {f"{user}|abandon": 1})
        redis_client.zadd(keys.DEADLINES, {f"{user}|before-20": 1})  # the key of before
    redis_client.zadd(keys.top_seller("p-1"), {"p-1": 3})

    assert reset_shoppers(redis_client, users) == 3
    assert not redis_client.exists(keys.offers("demo-12"), keys.offer_rules("demo-12"),
                                   keys.state("demo-12"))
    assert redis_client.zrange(keys.deadlines("u-42"), 0, -1) == [b"u-42|abandon"]
    assert redis_client.zrange(keys.DEADLINES, 0, -1) == [b"u-42|before-20"]
    # other shoppers and the aggregates are not the demo's to clear
    assert redis_client.exists(keys.offers("u-42"), keys.offer_rules("u-42"),
                               keys.state("u-42")) == 3
    assert redis_client.zscore(keys.top_seller("p-1"), "p-1") == 3
    assert reset_shoppers(redis_client, users) == 0  # nothing left: the banner says nothing


def test_each_replay_has_its_own_event_ids() -> None:
    first, second = sample_events(), sample_events()
    assert not {e["event_id"] for e in first} & {e["event_id"] for e in second}
