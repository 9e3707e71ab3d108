"""PUT /v1/customers/{id} (#23): scope, the one error shape, the stored record, and a rule
on a customer attribute firing through Kafka and the worker right after the PUT."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson
import redis
from sqlalchemy import Engine, text
from starlette.testclient import TestClient

from decisions.core import keys
from decisions.core.settings import Settings
from decisions.runtime.kafka import ensure_topics
from tests.api_helpers import KeyMaker, auth
from tests.helpers import event, running_worker, wait_for
from tests.test_worker_support import count, fast, offer_ruleset, publish

pytest_plugins = ["tests.api_fixtures"]


def test_put_customer_needs_the_scope_and_names_bad_fields(
        client: TestClient, make_key: KeyMaker, clean_db: Engine) -> None:
    body = {"tier": "gold", "country": "fr", "signup_date": "2024-03-01",
            "segments": ["vip"], "lifetime_value": 1500.5}
    storefront = auth(make_key("offers:read", "events:write"))
    denied = client.put("/v1/customers/c-1", json=body, headers=storefront)
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "forbidden"
    assert "customers:write" in denied.json()["error"]["message"]
    crm = auth(make_key("customers:write"))
    created = client.put("/v1/customers/c-1", json=body, headers=crm)
    assert created.status_code == 201
    assert created.json() == {"user_id": "c-1", "tier": "gold", "country": "FR",
                              "signup_date": "2024-03-01", "segments": ["vip"],
                              "lifetime_value": 1500.5, "consent": True}
    again = client.put("/v1/customers/c-1", json={"tier": "silver"}, headers=crm)
    assert again.status_code == 200  # replaced as a whole: what it omits is no longer known
    assert again.json() == {"user_id": "c-1", "tier": "silver", "country": None,
                            "signup_date": None, "segments": [], "consent": True}
    bad = client.put("/v1/customers/c-1", headers=crm,
                     json={"tier": "gold", "consent": False, "signup_date": "yesterday"})
    assert bad.status_code == 422
    error = bad.json()["error"]
    assert error["code"] == "validation_error"
    assert [d["field"] for d in error["details"]] == ["consent", "signup_date"]
    other = client.put("/v1/customers/c-1", json={"user_id": "c-2"}, headers=crm)
    assert other.status_code == 422 and other.json()["error"]["details"][0]["field"] == "user_id"
    assert client.put("/v1/customers/c-1", content=b"{", headers=crm).status_code == 400
    with clean_db.connect() as conn:
        row = conn.execute(text("SELECT tier, attributes FROM customers")).one()
    assert tuple(row) == ("silver", {})


def test_a_customer_rule_fires_on_the_next_event_after_the_put(
        client: TestClient, make_key: KeyMaker, api_settings: Settings,
        redis_client: redis.Redis, clean_db: Engine) -> None:
    # no periodic re-read of changed customers during the test: only the PUT can tell
    settings = replace(fast(api_settings), reload_interval_seconds=3600.0)
    gold = {"all": [{"field": "customer.tier", "op": "eq", "value": "gold"},
                    {"field": "customer.lifetime_value", "op": "gte", "value": 1000},
                    {"field": "event.type", "op": "eq", "value": "page_view"}]}
    publish(settings, offer_ruleset("loyalty", 15, rule_name="gold-welcome", when=gold))
    ensure_topics(settings)
    writer = auth(make_key("events:write"))
    crm = auth(make_key("customers:write"))
    start = datetime.now(UTC) - timedelta(minutes=2)

    def send(i: int) -> None:
        body = event("page_view", "shopper", start + timedelta(seconds=i), f"pv-{i}", page="home")
        assert client.post("/v1/events", json=body, headers=writer).status_code == 202

    with running_worker(settings) as worker:
        send(1)  # an unknown customer: no offer, and the empty attributes get cached
        wait_for(lambda: worker.stats.processed == 1)
        assert redis_client.get(keys.customer("shopper")) is not None
        assert count(clean_db, "SELECT count(*) FROM decisions") == 0
        put = client.put("/v1/customers/shopper", headers=crm,
                         json={"tier": "gold", "lifetime_value": 1200})
        assert put.status_code == 201
        send(2)
        wait_for(lambda: worker.stats.processed == 2)
    with clean_db.connect() as conn:
        rows = conn.execute(text("SELECT event_id, rule, reason FROM decisions")).all()
    assert [(r.event_id, r.rule) for r in rows] == [("pv-2", "gold-welcome")]
    reason = orjson.dumps(rows[0].reason).decode()
    assert "customer.tier" in reason and '"gold"' in reason and "1200" in reason
    print(orjson.dumps(rows[0].reason, option=orjson.OPT_INDENT_2).decode())
