"""DELETE /v1/users/{id} leaves nothing behind; GET /v1/users/{id}/export shows everything."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import orjson
import redis
from sqlalchemy import Engine, insert, text
from starlette.testclient import TestClient

from decisions.core import keys
from decisions.core.models import ArchivedEvent, Customer, Decision, OfferFeedback
from tests.api_helpers import KeyMaker, auth, offer, store_offer, store_recs

pytest_plugins = ["tests.api_fixtures"]


USER = "u-[weird]*?"  # glob characters must not widen the SCAN
PATH = "/v1/users/" + quote(USER, safe="")
OTHER = "u-[weird]x"


def seed(redis_client: redis.Redis, engine: Engine, user: str) -> None:
    store_offer(redis_client, user, offer(user, "a"))
    store_recs(redis_client, user, ["p-1"])
    redis_client.hset(keys.state(user), mapping={"cart_value": 10, "order_count": 1})
    redis_client.hset(keys.cart(user), "p-1", b"{}")
    redis_client.sadd(keys.bought(user), "p-2")
    redis_client.sadd(keys.segments(user), "vip")
    redis_client.set(keys.customer(user), orjson.dumps({"tier": "gold"}))
    redis_client.set(keys.seen(user, "e-1"), "done")
    redis_client.zadd(f"d:ts:{keys.tag(user)}:add_to_cart", {"e-1": 1})
    redis_client.zadd(keys.deadlines(user), {f"{user}|abandon": 1, f"{user}|other": 2})
    redis_client.zadd(keys.DEADLINES, {f"{user}|before-20": 3})  # the one key of before
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(insert(Customer).values(user_id=user, tier="gold"))
        conn.execute(insert(Decision).values(
            action_id=f"a-{user}", user_id=user, event_id="e-1", ruleset="promo",
            ruleset_version=1, rule="r", kind="discount", payload={}, reason={},
            decided_at=now, event_ts=now))
        conn.execute(insert(OfferFeedback).values(offer_id=f"o-{user}", user_id=user,
                                                  kind="impression"))
        conn.execute(insert(ArchivedEvent).values(
            event_id=f"e-{user}", ts=now, user_id=user, type="page_view",
            properties={"page": "home"}))


def held(redis_client: redis.Redis, engine: Engine, user: str) -> list[str]:
    """Every trace of the user: Redis keys and members, PostgreSQL rows (but the
    tombstone, kept on purpose: see tests/test_erasure.py)."""
    found = [k.decode() for k in redis_client.scan_iter(count=1000) if user.encode() in k
             and k != keys.erased(user).encode()]
    for key in keys.ALL_DEADLINE_KEYS:
        members: Any = redis_client.zrange(key, 0, -1)
        found += [m.decode() for m in members if m.decode().startswith(user + "|")]
    with engine.connect() as conn:
        for table in ("customers", "decisions", "offer_feedback", "events"):
            count = conn.execute(text(f"SELECT count(*) FROM {table} WHERE user_id = :u"),
                                 {"u": user}).scalar_one()
            found += [table] * int(count)
    return found


def test_erasure_leaves_nothing_behind(
    client: TestClient, make_key: KeyMaker, redis_client: redis.Redis, clean_db: Engine
) -> None:
    seed(redis_client, clean_db, USER)
    seed(redis_client, clean_db, OTHER)
    before = held(redis_client, clean_db, USER)
    assert len(before) >= 14
    admin = auth(make_key("admin"))
    resp = client.delete(PATH, headers=admin)
    assert resp.status_code == 200
    erased = resp.json()["erased"]
    assert erased["customers"] == 1 and erased["events"] == 1 and erased["deadlines"] == 3
    # offers, offrule, ever (grants per rule), recs, st, cart, bought, seg, cust, seen, ts
    assert erased["redis_keys"] == 11
    assert held(redis_client, clean_db, USER) == []
    # nobody else was touched
    assert len(held(redis_client, clean_db, OTHER)) == len(before)
    # idempotent
    again = client.delete(PATH, headers=admin)
    assert again.status_code == 200 and set(again.json()["erased"].values()) == {0}


def test_export_shows_everything(
    client: TestClient, make_key: KeyMaker, redis_client: redis.Redis, clean_db: Engine
) -> None:
    seed(redis_client, clean_db, USER)
    resp = client.get(PATH + "/export", headers=auth(make_key("admin")))
    assert resp.status_code == 200
    body = resp.json()
    pg = body["postgres"]
    assert [len(pg[t]) for t in ("customers", "offer_feedback", "decisions", "events")] == [
        1, 1, 1, 1]
    assert pg["customers"][0]["tier"] == "gold"
    data = body["redis"]["keys"]
    assert data[keys.bought(USER)] == ["p-2"]
    assert data[keys.state(USER)] == {"cart_value": "10", "order_count": "1"}
    assert set(body["redis"]["deadlines"]) == {f"{USER}|abandon", f"{USER}|other",
                                               f"{USER}|before-20"}
    assert len(data) == 11  # ... and d:ever, the offers each rule ever granted
    assert data[keys.offers_ever(USER)] == {"promo/a": "1"}
    assert all(OTHER not in k for k in data)
