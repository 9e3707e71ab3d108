"""docs/api.md and the API agree: its examples against the OpenAPI document and the API.

Examples in the docs are JSON blocks preceded by ``<!-- example: SchemaName -->``; each
must validate against that schema of ``/openapi.json``. The event examples are then sent
to the API (202), and an offer made by the real discount action and served by the API
carries exactly the fields the ``Offer`` schema documents.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema_rs
import orjson
import pytest
import redis
from starlette.testclient import TestClient

from api.app import create_app
from api.openapi import document
from decisions.core.events import EVENT_TYPES, format_ts, parse_event
from decisions.core.settings import Settings
from decisions.runtime.actions import HANDLERS, Context
from decisions.runtime.engine import Match
from decisions.runtime.kafka import ensure_topics
from decisions.runtime.offers import OfferStore
from tests.api_helpers import KeyMaker, auth
from tests.helpers import ROOT

pytest_plugins = ["tests.api_fixtures"]

EXAMPLE = re.compile(r"<!-- example: (\w+) -->\n```json\n(.*?)\n```", re.S)


def examples() -> list[tuple[str, Any]]:
    text = (ROOT / "docs" / "api.md").read_text()
    return [(name, orjson.loads(body)) for name, body in EXAMPLE.findall(text)]


def validator(schema_name: str) -> Any:
    components = document(Settings())["components"]
    return jsonschema_rs.validator_for(
        {"$ref": f"#/components/schemas/{schema_name}", "components": components})


def test_every_example_in_the_docs_matches_the_openapi_document() -> None:
    found = examples()
    assert {name for name, _ in found} >= {"Offers", "Recommendations", "Event",
                                           "EventBatch", "Accepted"}
    for name, body in found:
        errors = [e.message for e in validator(name).iter_errors(body)]
        assert not errors, f"docs/api.md example of {name}: {errors}"
    batch = next(body for name, body in found if name == "EventBatch")
    single = next(body for name, body in found if name == "Event")
    shown = {e["type"] for e in batch} | {single["type"]}
    assert shown == set(EVENT_TYPES), "one example per event type"


def test_the_event_examples_are_accepted(api_settings: Settings, demo_catalog: object,
                                         make_key: KeyMaker) -> None:
    ensure_topics(api_settings, [api_settings.events_topic])
    key = make_key("events:write")
    with TestClient(create_app(api_settings)) as client:
        for name, body in examples():
            if name not in ("Event", "EventBatch"):
                continue
            # the examples' times are fixed; the contract accepts events of the last 48 h
            stamp = format_ts(datetime.now(UTC))
            body = ([{**e, "ts": stamp} for e in body] if isinstance(body, list)
                    else {**body, "ts": stamp})
            for event in body if isinstance(body, list) else [body]:
                parse_event(event)  # the contract itself agrees
            answer = client.post("/v1/events", json=body, headers=auth(key))
            assert answer.status_code == 202, (name, answer.text)
            assert validator("Accepted").is_valid(answer.json())


def test_a_served_offer_has_exactly_the_documented_fields(
        client: TestClient, make_key: KeyMaker, redis_client: redis.Redis) -> None:
    now = datetime.now(UTC)
    event = parse_event({"event_id": "e-doc-1", "type": "page_view", "user_id": "u-doc",
                         "ts": format_ts(now - timedelta(seconds=5)),
                         "properties": {"page": "checkout"}})
    match = Match("storefront", 4, "high-value-cart", 100, [], {"cart_value": 250.0})
    ctx = Context(event, {}, match, stacking=False, recommender=None)
    HANDLERS["discount"](ctx, {"percent": 10, "code": "CART10", "min_basket": 50,
                               "per_user_cap": 2, "products": ["p-1"],
                               "max_per_user_ever": 3})
    # as the worker stores it for an event it traced (tracing on: the one optional field)
    stored = {**ctx.effects[0].payload, "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}
    OfferStore(redis_client).store_offer(redis_client, "u-doc", stored,
                                         int(now.timestamp() * 1000), 3600)
    answer = client.get("/v1/users/u-doc/offers", headers=auth(make_key("offers:read")))
    assert answer.status_code == 200
    body = answer.json()
    assert validator("Offers").is_valid(body), list(validator("Offers").iter_errors(body))
    offer = body["offers"][0]
    documented = document(Settings())["components"]["schemas"]["Offer"]["properties"]
    assert set(offer) == set(documented) - {"free_shipping"}  # one kind's terms
    # a free-shipping offer: its terms under its kind, the rest the same
    ship = Context(event, {}, Match("perks", 2, "ship-free", 1, [], {"cart_value": 60.0}),
                   stacking=True, recommender=None)
    HANDLERS["free_shipping"](ship, {"code": "SHIPFREE", "min_basket": 50})
    OfferStore(redis_client).store_offer(redis_client, "u-doc2", ship.effects[0].payload,
                                         int(now.timestamp() * 1000), 3600)
    key = make_key("offers:read")
    for _ in range(5):  # a loaded box may time a read out (50 ms): the fallback answers
        served = client.get("/v1/users/u-doc2/offers", headers=auth(key)).json()
        if served["personalized"] or served.get("reason") != "redis_unavailable":
            break
    assert validator("Offers").is_valid(served)
    (free,) = served["offers"]
    assert set(free) == set(documented) - {"discount", "products", "max_per_user_ever",
                                           "trace_id"}
    assert free["kind"] == "free_shipping" and free["free_shipping"] == {
        "code": "SHIPFREE", "min_basket": 50}
    assert isinstance(offer["reason"], str) and offer["reason"].startswith(
        "rule high-value-cart: cart_value=250.0")


@pytest.mark.parametrize("field", ["reason", "created_at", "event_id", "per_user_cap",
                                   "trace_id"])
def test_the_docs_describe_each_offer_field(field: str) -> None:
    assert f"`{field}`" in (ROOT / "docs" / "api.md").read_text()
