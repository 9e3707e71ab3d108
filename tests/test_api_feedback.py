"""POST /v1/offers/{offer_id}/impression and /redeem: idempotent, stored with the rule."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import redis
from sqlalchemy import Engine, insert, select
from starlette.testclient import TestClient

from decisions.core.models import Decision, OfferFeedback
from tests.api_helpers import KeyMaker, auth, offer, store_offer

pytest_plugins = ["tests.api_fixtures"]



@pytest.fixture
def writer(make_key: KeyMaker) -> dict[str, str]:
    return auth(make_key("events:write"))


def rows(engine: Engine) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        result = conn.execute(select(OfferFeedback.offer_id, OfferFeedback.user_id,
                                     OfferFeedback.kind, OfferFeedback.rule,
                                     OfferFeedback.ruleset, OfferFeedback.amount)
                              .order_by(OfferFeedback.id))
        return [tuple(r) for r in result]


def test_impression_and_redeem_are_idempotent(
    client: TestClient, writer: dict[str, str], redis_client: redis.Redis, clean_db: Engine
) -> None:
    store_offer(redis_client, "u-1", offer("u-1", "cart-rescue", offer_id="o-1"))
    first = client.post("/v1/offers/o-1/impression", json={"user_id": "u-1"}, headers=writer)
    assert first.status_code == 201
    assert first.json() == {"offer_id": "o-1", "kind": "impression", "user_id": "u-1",
                            "rule": "cart-rescue", "ruleset": "promo", "duplicate": False}
    again = client.post("/v1/offers/o-1/impression", json={"user_id": "u-1"}, headers=writer)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    redeem = client.post("/v1/offers/o-1/redeem", json={"user_id": "u-1", "amount": 99.5},
                         headers=writer)
    assert redeem.status_code == 201
    assert client.post("/v1/offers/o-1/redeem", json={"user_id": "u-1", "amount": 99.5},
                       headers=writer).status_code == 200
    assert rows(clean_db) == [("o-1", "u-1", "impression", "cart-rescue", "promo", None),
                              ("o-1", "u-1", "redeem", "cart-rescue", "promo", 99.5)]


def test_offer_found_in_decisions_when_gone_from_redis(
    client: TestClient, writer: dict[str, str], clean_db: Engine
) -> None:
    now = datetime.now(UTC)
    with clean_db.begin() as conn:
        conn.execute(insert(Decision).values(
            action_id="o-old", user_id="u-2", event_id="e-1", ruleset="promo",
            ruleset_version=1, rule="win-back", kind="discount", payload={}, reason={},
            decided_at=now, event_ts=now))
    resp = client.post("/v1/offers/o-old/redeem", json={"user_id": "u-2"}, headers=writer)
    assert resp.status_code == 201 and resp.json()["rule"] == "win-back"
    other = client.post("/v1/offers/o-old/redeem", json={"user_id": "u-3"}, headers=writer)
    assert other.status_code == 404  # not this user's offer


def test_feedback_errors(client: TestClient, writer: dict[str, str],
                         make_key: KeyMaker) -> None:
    unknown = client.post("/v1/offers/nope/impression", json={"user_id": "u-1"}, headers=writer)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    bad = client.post("/v1/offers/o-1/redeem", json={"user_id": "", "amount": -3, "x": 1},
                      headers=writer)
    assert bad.status_code == 422
    assert {d["field"] for d in bad.json()["error"]["details"]} == {"user_id", "amount", "x"}
    no_amount = client.post("/v1/offers/o-1/impression", json={"user_id": "u", "amount": 1},
                            headers=writer)
    assert no_amount.json()["error"]["details"] == [{"field": "amount",
                                                     "message": "unknown field"}]
    assert client.post("/v1/offers/o-1/impression", content=b"[", headers=writer
                       ).status_code == 400
    assert client.post("/v1/offers/o-1/impression", json={"user_id": "u"}).status_code == 401
    reader = auth(make_key("offers:read"))
    assert client.post("/v1/offers/o-1/impression", json={"user_id": "u"}, headers=reader
                       ).status_code == 403
    assert client.get("/v1/offers/o-1/impression", headers=writer).status_code == 405
