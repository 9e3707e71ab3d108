"""Exclusive offers end to end (issue #19, item 5): a highest-priority, non-stackable
holiday rule hides every other offer while its offer is active. Events go in through the
storefront API (to Kafka), the worker decides (Redis, PostgreSQL), offers are read back
through the API."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import orjson
import redis
from starlette.testclient import TestClient

from decisions.core.settings import Settings
from decisions.runtime.offers import select_offers
from tests.api_helpers import KeyMaker, auth
from tests.helpers import event, minutes, now, running_worker, wait_for
from tests.test_worker_support import fast, publish

pytest_plugins = ["tests.api_fixtures"]


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _discount(name: str, priority: int, percent: int, when: dict[str, Any],
              expires: int = 600, **extra: Any) -> dict[str, Any]:
    return {"name": name, "priority": priority, "when": when, **extra,
            "then": [{"discount": {"percent": percent, "code": name.upper(),
                                   "expires_minutes": expires}}]}


def test_a_non_stackable_holiday_rule_hides_every_other_offer_while_active(
        settings: Settings, client: TestClient, make_key: KeyMaker,
        redis_client: redis.Redis) -> None:
    settings = fast(settings)
    t = now()
    cart = {"field": "event.type", "op": "eq", "value": "add_to_cart"}
    home = {"all": [{"field": "event.type", "op": "eq", "value": "page_view"},
                    {"field": "event.page", "op": "eq", "value": "home"}]}
    # everyday offers stack with each other
    publish(settings, {"name": "everyday", "stacking": True, "rules": [
        _discount("cart10", 10, 10, cart), _discount("welcome", 5, 5, home)]})
    # the holiday: its own ruleset, not stackable, the highest priority, active for a
    # window of event time that starts an hour ago
    publish(settings, {"name": "holiday", "stacking": False, "rules": [
        _discount("xmas", 1000, 25, cart, expires=120,
                  active={"from": _iso(t - minutes(60)), "until": _iso(t + minutes(60))})]})
    key = make_key()

    def send(*events: dict[str, Any]) -> None:
        for e in events:
            assert client.post("/v1/events", json=e, headers=auth(key)).status_code == 202

    def shown(user: str) -> list[str]:
        resp = client.get(f"/v1/users/{user}/offers", headers=auth(key))
        assert resp.status_code == 200, resp.text
        return sorted(o["rule"] for o in resp.json()["offers"])

    with running_worker(settings):
        # before the holiday: both everyday offers, stacked
        send(event("page_view", "ann", t - minutes(120), page="home"),
             event("add_to_cart", "ann", t - minutes(119), product_id="p-1", price=40.0,
                   quantity=1))
        assert wait_for(lambda: shown("ann") == ["cart10", "welcome"] or None)
        # a cart event in the holiday window: the holiday offer alone is shown
        send(event("add_to_cart", "ann", t - minutes(30), product_id="p-2", price=60.0,
                   quantity=1))
        assert wait_for(lambda: shown("ann") == ["xmas"] or None)
        # another shopper in the holiday window: the holiday offer hides the welcome one
        # that came after it as well
        send(event("add_to_cart", "bob", t - minutes(20), product_id="p-1", price=40.0,
                   quantity=1),
             event("page_view", "bob", t - minutes(19), page="home"))
        wait_for(lambda: redis_client.hlen("d:offers:{bob}") == 3)
        assert shown("bob") == ["xmas"]
        # outside the window nothing changes: a shopper of last night still gets both
        send(event("page_view", "cat", t - minutes(90), page="home"),
             event("add_to_cart", "cat", t - minutes(89), product_id="p-1", price=40.0,
                   quantity=1))
        assert wait_for(lambda: shown("cat") == ["cart10", "welcome"] or None)
    # the others were hidden, not withdrawn: once the holiday offer has expired, they show
    stored = [orjson.loads(v) for v in redis_client.hvals("d:offers:{ann}")]
    xmas = next(o for o in stored if o["rule"] == "xmas")
    after = datetime.fromtimestamp(xmas["expires_ms"] / 1000 + 1).astimezone()
    assert sorted(o["rule"] for o in select_offers(stored, after)) == ["cart10", "welcome"]
    assert after - t < timedelta(hours=2)  # (the everyday offers outlive it)
