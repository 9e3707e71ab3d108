"""Erasure that holds (#17): exact per-user keys, a tombstone the worker honours for events
from before the erasure (through real Kafka), consent withdrawal kept, any stored value
exported."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import redis
from sqlalchemy import Engine, insert, text
from starlette.testclient import TestClient

from api.app import create_app
from decisions.core import keys
from decisions.core.models import ArchivedEvent, Customer
from decisions.core.settings import Settings
from decisions.runtime.kafka import ensure_topics
from tests.api_helpers import KeyMaker, auth
from tests.helpers import event, running_worker, wait_for
from tests.test_api_privacy import held, seed
from tests.test_worker_support import count, fast, offer_ruleset, produce, publish

pytest_plugins = ["tests.api_fixtures"]


def path(user: str) -> str:
    return "/v1/users/" + quote(user, safe="")


def test_export_and_erasure_match_the_user_id_exactly(
    client: TestClient, make_key: KeyMaker, redis_client: redis.Redis, clean_db: Engine
) -> None:
    # ids that start with "A}" make keys that the old pattern d:*:{A}* also matched
    others = ["A}evil", "A}:x", "A}"]
    for user in ["A", *others]:
        seed(redis_client, clean_db, user)
    own = sorted([
        keys.offers("A"), keys.offer_rules("A"), keys.recs("A"), keys.state("A"),
        keys.cart("A"), keys.bought("A"), keys.segments("A"), keys.customer("A"),
        keys.seen("A", "e-1"), f"d:ts:{keys.tag('A')}:add_to_cart",
        keys.offers_ever("A")])
    before = {k.decode() for k in redis_client.scan_iter(count=1000)}
    admin = auth(make_key("admin"))
    exported = client.get(path("A") + "/export", headers=admin)
    assert exported.status_code == 200
    assert sorted(exported.json()["redis"]["keys"]) == own
    erased = client.delete(path("A"), headers=admin)
    assert erased.status_code == 200 and erased.json()["erased"]["redis_keys"] == len(own)
    after = {k.decode() for k in redis_client.scan_iter(count=1000)}
    # (a deadlines shard that held only A's timers goes with them: Redis drops empty sets)
    assert sorted(before - after - set(keys.DEADLINE_KEYS)) == own
    assert after - before == {keys.erased("A")}
    assert count(clean_db, "SELECT count(*) FROM customers WHERE user_id <> 'A'") == 3


def test_export_answers_any_stored_value(
    client: TestClient, make_key: KeyMaker, redis_client: redis.Redis, clean_db: Engine
) -> None:
    now = datetime.now(UTC)
    with clean_db.begin() as conn:  # PostgreSQL's jsonb gives 1e20 back as an integer
        conn.execute(insert(ArchivedEvent).values(
            event_id="e-big", ts=now, user_id="big", type="product_view",
            properties={"product_id": "p", "price": 1e20}))
        conn.execute(insert(Customer).values(user_id="big", attributes={"ltv": 1e20}))
    resp = client.get(path("big") + "/export", headers=auth(make_key("admin")))
    assert resp.status_code == 200
    body = resp.json()
    assert body["postgres"]["events"][0]["properties"]["price"] == 10**20
    assert body["postgres"]["customers"][0]["attributes"] == {"ltv": 10**20}


def _cart(user: str, at: datetime, event_id: str | None = None) -> dict[str, Any]:
    return event("add_to_cart", user, at, event_id, product_id="p-1", price=50.0, quantity=1)


def test_events_from_before_the_erasure_do_not_bring_the_user_back(
    client: TestClient, make_key: KeyMaker, api_settings: Settings,
    redis_client: redis.Redis, clean_db: Engine,
) -> None:
    settings = fast(api_settings)
    publish(settings, offer_ruleset())
    ensure_topics(settings)
    admin = auth(make_key("admin"))
    before = datetime.now(UTC) - timedelta(minutes=5)
    first = [_cart("gone", before + timedelta(seconds=i), f"gone-{i}") for i in range(20)]
    with running_worker(settings) as worker:
        produce(settings, first)
        wait_for(lambda: worker.stats.processed == 20)
    assert held(redis_client, clean_db, "gone")  # state, offers, archive, decision
    assert client.delete(path("gone"), headers=admin).status_code == 200
    assert held(redis_client, clean_db, "gone") == []
    # still in flight, or replayed from the topic: new ids and redeliveries of the same
    # ids, all with event times before the erasure
    late = [_cart("gone", before + timedelta(seconds=30 + i)) for i in range(20)]
    produce(settings, [*late, *first, _cart("bystander", before)])
    with running_worker(settings) as worker:
        wait_for(lambda: worker.stats.processed + worker.stats.duplicates == 41)
    # (stopped: every batch it took is settled)
    assert held(redis_client, clean_db, "gone") == []
    assert count(clean_db, "SELECT count(*) FROM erasures WHERE user_id = 'gone'") == 1
    assert count(clean_db, "SELECT count(*) FROM decisions WHERE user_id = 'bystander'") == 1
    # the shopper comes back after the erasure: a new history starts
    produce(settings, [_cart("gone", datetime.now(UTC) + timedelta(seconds=1))])
    with running_worker(settings) as worker:
        wait_for(lambda: worker.stats.processed == 1)
    assert count(clean_db, "SELECT count(*) FROM events WHERE user_id = 'gone'") == 1
    assert count(clean_db, "SELECT count(*) FROM decisions WHERE user_id = 'gone'") == 1
    assert redis_client.hlen(keys.offers("gone")) == 1


def test_consent_withdrawn_then_erased_stays_withdrawn(
    client: TestClient, make_key: KeyMaker, api_settings: Settings,
    redis_client: redis.Redis, clean_db: Engine,
) -> None:
    settings = fast(api_settings)
    publish(settings, offer_ruleset())
    ensure_topics(settings)
    admin = auth(make_key("admin"))
    reader = auth(make_key("offers:read"))
    with clean_db.begin() as conn:
        conn.execute(insert(Customer).values(user_id="shy", tier="gold", country="FR",
                                             attributes={"email": "shy@example.com"}))
    start = datetime.now(UTC) - timedelta(minutes=5)
    produce(settings, [_cart("shy", start), event("consent", "shy", start
                                                  + timedelta(seconds=1), granted=False)])
    with running_worker(settings) as worker:
        wait_for(lambda: worker.stats.processed == 2)
    erased = client.delete(path("shy"), headers=admin)
    assert erased.status_code == 200
    produce(settings, [_cart("shy", datetime.now(UTC) + timedelta(seconds=1))])
    with running_worker(settings) as worker:
        wait_for(lambda: worker.stats.processed == 1)
    # (stopped: its batches are settled)
    assert count(clean_db, "SELECT count(*) FROM decisions WHERE user_id = 'shy'") == 0
    assert redis_client.hlen(keys.offers("shy")) == 0
    with TestClient(create_app(api_settings)) as fresh:  # its consent list read now
        offers = fresh.get("/v1/users/shy/offers", headers=reader).json()
    assert offers["personalized"] is False and offers["reason"] == "consent_withdrawn"
    assert erased.json()["kept"] == {"consent_withdrawn": True}
    with clean_db.connect() as conn:
        row = conn.execute(text("SELECT * FROM customers WHERE user_id = 'shy'")).one()
    # only the withdrawal is kept: no attributes, tier or country
    assert (row.consent, row.tier, row.country, row.attributes) == (False, None, None, {})
    # granted anew: personalized again
    later = datetime.now(UTC) + timedelta(seconds=2)
    produce(settings, [event("consent", "shy", later, granted=True),
                       _cart("shy", later + timedelta(seconds=1))])
    with running_worker(settings) as worker:
        wait_for(lambda: worker.stats.processed == 2)
    assert count(clean_db, "SELECT count(*) FROM decisions WHERE user_id = 'shy'") == 1


def test_tombstones_expire_with_the_topic_retention(
    client: TestClient, make_key: KeyMaker, api_settings: Settings,
    redis_client: redis.Redis, clean_db: Engine,
) -> None:
    admin = auth(make_key("admin"))
    assert client.delete(path("t-1"), headers=admin).status_code == 200
    ttl = redis_client.ttl(keys.erased("t-1"))
    days = api_settings.erasure_tombstone_days
    assert days * 86400 - 60 < ttl <= days * 86400
    with clean_db.begin() as conn:
        conn.execute(text("UPDATE erasures SET erased_at = now() - make_interval(days => :d)"
                          " - interval '1 minute'"), {"d": days})
    assert client.delete(path("t-2"), headers=admin).status_code == 200
    assert count(clean_db, "SELECT count(*) FROM erasures") == 1  # t-1's is past retention
    export = client.get(path("t-2") + "/export", headers=admin).json()
    assert [r["user_id"] for r in export["postgres"]["erasures"]] == ["t-2"]
