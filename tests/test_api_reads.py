"""GET offers and recommendations against real Redis and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest
import redis
from sqlalchemy import Engine, insert
from starlette.testclient import TestClient

from api.app import create_app
from api.routes import reads
from decisions.core import keys
from decisions.core.models import Customer
from decisions.core.settings import Settings
from tests.api_helpers import (
    KeyMaker,
    auth,
    offer,
    store_offer,
    store_recs,
    store_top_sellers,
)

pytest_plugins = ["tests.api_fixtures"]


def test_offers_are_prioritized_and_unexpired(
    client: TestClient, make_key: KeyMaker, redis_client: redis.Redis
) -> None:
    key = make_key("offers:read")
    store_offer(redis_client, "u-1", offer("u-1", "low", priority=1))
    store_offer(redis_client, "u-1", offer("u-1", "high", priority=9))
    store_offer(redis_client, "u-1", offer("u-1", "gone", priority=20, ttl=-5))
    resp = client.get("/v1/users/u-1/offers", headers=auth(key))
    assert resp.status_code == 200
    body = resp.json()
    assert body["personalized"] is True and "reason" not in body
    assert [o["rule"] for o in body["offers"]] == ["high", "low"]
    first = body["offers"][0]
    assert first["offer_id"] == "o-u-1-high" and first["ruleset_version"] == 3
    assert first["discount"] == {"type": "percent", "value": 10, "code": "SAVE10"}
    assert "expires_ms" not in first
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["cache-control"] == "private, max-age=5"
    assert resp.content == orjson.dumps(body)  # compact JSON


def test_non_stackable_offer_wins_alone(
    client: TestClient, make_key: KeyMaker, redis_client: redis.Redis
) -> None:
    key = make_key("offers:read")
    store_offer(redis_client, "u-2", offer("u-2", "solo", priority=9, stackable=False))
    store_offer(redis_client, "u-2", offer("u-2", "other", priority=1))
    body = client.get("/v1/users/u-2/offers", headers=auth(key)).json()
    assert [o["rule"] for o in body["offers"]] == ["solo"]


def test_user_without_offers_gets_the_default_set(client: TestClient, make_key: KeyMaker) -> None:
    body = client.get("/v1/users/nobody/offers", headers=auth(make_key("offers:read"))).json()
    assert body == {"user_id": "nobody", "personalized": False, "reason": "no_offers",
                    "offers": []}


def test_recommendations_join_catalog_and_filter(
    client: TestClient, make_key: KeyMaker, redis_client: redis.Redis
) -> None:
    key = make_key("offers:read")
    # p-7 is out of stock in the demo catalog, p-3 was bought, p-999 is unknown
    store_recs(redis_client, "u-3", ["p-2", "p-7", "p-3", "p-999", "p-4", "p-5"])
    redis_client.sadd(keys.bought("u-3"), "p-3")
    resp = client.get("/v1/users/u-3/recommendations?limit=2", headers=auth(key))
    assert resp.status_code == 200
    body = resp.json()
    assert body["personalized"] is True and body["slot"] == "default"
    assert body["strategy"] == "covisit" and body["rule"] == "viewed-shoes"
    assert body["products"] == [
        {"id": "p-2", "name": "City Sneaker", "price": 129.0,
         "image_url": "https://cdn.example.com/img/p-2.jpg", "category": "shoes"},
        {"id": "p-4", "name": "Canvas Slip-On", "price": 59.0,
         "image_url": "https://cdn.example.com/img/p-4.jpg", "category": "shoes"},
    ]


def test_recommendations_slot_and_expiry(
    client: TestClient, make_key: KeyMaker, redis_client: redis.Redis
) -> None:
    key = make_key("offers:read")
    store_recs(redis_client, "u-4", ["p-10"], slot="cart")
    store_recs(redis_client, "u-4", ["p-11"], slot="home", ttl=-1)
    cart = client.get("/v1/users/u-4/recommendations?slot=cart", headers=auth(key)).json()
    assert [p["id"] for p in cart["products"]] == ["p-10"] and cart["personalized"]
    home = client.get("/v1/users/u-4/recommendations?slot=home", headers=auth(key)).json()
    assert home["personalized"] is False and home["reason"] == "no_recommendations"


def test_fallback_recommendations_are_top_sellers_not_bought(
    client: TestClient, make_key: KeyMaker, redis_client: redis.Redis, api_settings: Settings
) -> None:
    store_top_sellers(redis_client, {"p-30": 50, "p-22": 40, "p-12": 30, "p-1": 20})
    redis_client.sadd(keys.bought("u-5"), "p-12")
    key = make_key("offers:read")
    with TestClient(create_app(api_settings)) as fresh:  # takes the top-sellers snapshot
        body = fresh.get("/v1/users/u-5/recommendations?limit=4", headers=auth(key)).json()
    assert body["personalized"] is False and body["reason"] == "no_recommendations"
    assert body["strategy"] == "top_sellers"
    # p-22 is out of stock; padded with catalog order (p-1 already there)
    assert [p["id"] for p in body["products"]] == ["p-30", "p-1", "p-2", "p-3"]


def test_query_validation(client: TestClient, make_key: KeyMaker) -> None:
    key = make_key("offers:read")
    for query in ("limit=0", "limit=51", "limit=abc", "slot="):
        resp = client.get(f"/v1/users/u-1/recommendations?{query}", headers=auth(key))
        assert resp.status_code == 400, query
        field = resp.json()["error"]["details"][0]["field"]
        assert field == query.split("=")[0]
    resp = client.get("/v1/users/" + "x" * 201 + "/offers", headers=auth(key))
    assert resp.status_code == 400
    assert resp.json()["error"]["details"][0]["field"] == "user_id"


def test_etag_and_304(client: TestClient, make_key: KeyMaker, redis_client: redis.Redis) -> None:
    key = make_key("offers:read")
    store_offer(redis_client, "u-6", offer("u-6", "a"))
    first = client.get("/v1/users/u-6/offers", headers=auth(key))
    etag = first.headers["etag"]
    assert etag.startswith('W/"')
    again = client.get("/v1/users/u-6/offers", headers={**auth(key), "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    assert again.headers["cache-control"] == "private, max-age=5"
    # the content changes: a new ETag and a full answer
    store_offer(redis_client, "u-6", offer("u-6", "b"))
    changed = client.get("/v1/users/u-6/offers", headers={**auth(key), "If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    strong = etag.removeprefix("W/")
    listed = client.get("/v1/users/u-6/offers",
                        headers={**auth(key), "If-None-Match": f'"x", {strong}'})
    assert listed.status_code == 200  # old tag no longer matches
    new = changed.headers["etag"]
    assert client.get("/v1/users/u-6/offers",
                      headers={**auth(key), "If-None-Match": f'"x", {new}'}).status_code == 304


def test_large_bodies_are_gzipped(
    client: TestClient, make_key: KeyMaker, redis_client: redis.Redis
) -> None:
    key = make_key("offers:read")
    store_recs(redis_client, "u-7", [f"p-{i}" for i in range(1, 41)])
    resp = client.get("/v1/users/u-7/recommendations?limit=30",
                      headers={**auth(key), "Accept-Encoding": "gzip"})
    assert resp.headers["content-encoding"] == "gzip"
    assert int(resp.headers["content-length"]) < len(orjson.dumps(resp.json())) / 2
    assert len(resp.json()["products"]) == 30
    small = client.get("/v1/users/u-7/recommendations?limit=1",
                       headers={**auth(key), "Accept-Encoding": "gzip"})
    assert "content-encoding" not in small.headers
    raw = client.get("/v1/users/u-7/recommendations?limit=30",
                     headers={**auth(key), "Accept-Encoding": "identity"})
    assert "content-encoding" not in raw.headers


def test_consent_withdrawn_in_redis_turns_personalization_off(
    client: TestClient, make_key: KeyMaker, redis_client: redis.Redis
) -> None:
    key = make_key("offers:read")
    store_offer(redis_client, "u-8", offer("u-8", "a"))
    store_recs(redis_client, "u-8", ["p-1"])
    redis_client.set(keys.customer("u-8"), orjson.dumps({"tier": "gold", "consent": False}))
    offers = client.get("/v1/users/u-8/offers", headers=auth(key)).json()
    assert offers == {"user_id": "u-8", "personalized": False, "reason": "consent_withdrawn",
                      "offers": []}
    recs = client.get("/v1/users/u-8/recommendations", headers=auth(key)).json()
    assert recs["personalized"] is False and recs["reason"] == "consent_withdrawn"


def test_consent_withdrawn_in_customers_table(
    api_settings: Settings, demo_catalog: object, make_key: KeyMaker, redis_client: redis.Redis,
    clean_db: Engine,
) -> None:
    with clean_db.begin() as conn:
        conn.execute(insert(Customer).values(user_id="u-9", consent=False))
        conn.execute(insert(Customer).values(user_id="u-10", attributes={"consent": False}))
        conn.execute(insert(Customer).values(user_id="u-11", consent=True))
    key = make_key("offers:read")
    with TestClient(create_app(replace(api_settings))) as test_client:
        for uid, personalized in (("u-9", False), ("u-10", False), ("u-11", True)):
            store_offer(redis_client, uid, offer(uid, "a"))
            body = test_client.get(f"/v1/users/{uid}/offers", headers=auth(key)).json()
            assert body["personalized"] is personalized, uid


def test_dispatched_and_routed_reads_answer_alike(
    api_settings: Settings, demo_catalog: object, make_key: KeyMaker, redis_client: redis.Redis
) -> None:
    """The hot GETs are answered before the router (api.dispatch); with a root_path they go
    through the router to the same endpoints: same status, headers and body, errors too."""
    key = make_key("offers:read")
    store_offer(redis_client, "u-9", offer("u-9", "one", priority=3))
    store_recs(redis_client, "u-9", ["p-1", "p-2"])
    with TestClient(create_app(api_settings)) as direct, \
            TestClient(create_app(api_settings), root_path="/shop") as routed:
        for path, headers, status in (
                ("/v1/users/u-9/offers", auth(key), 200),
                ("/v1/users/u-9/recommendations?limit=1", auth(key), 200),
                ("/v1/users/u-9/recommendations?limit=0", auth(key), 400),
                ("/v1/users/u-9/offers", {"Authorization": "Bearer nope"}, 401)):
            one, two = direct.get(path, headers=headers), routed.get(path, headers=headers)
            assert one.status_code == status, (path, one.text)
            assert (one.status_code, one.content) == (two.status_code, two.content), path
            drop = {"date", "server"}
            assert {k: v for k, v in one.headers.items() if k not in drop} == \
                {k: v for k, v in two.headers.items() if k not in drop}, path
        for client in (direct, routed):
            metrics = client.get("/metrics").text
            assert ('decisions_api_request_seconds_count{method="GET",'
                    'route="/v1/users/{user_id}/offers",status="200"} 1.0') in metrics
            assert 'route="/v1/users/{user_id}/recommendations",status="400"} 1.0' in metrics


def test_an_unexpected_error_on_a_read_is_a_json_500(
    api_settings: Settings, demo_catalog: object, make_key: KeyMaker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Dispatched or routed, a bug in a read answers the one error shape with 500 (and is
    raised on to the server, which logs it)."""
    async def broken(api: object, request: object) -> dict[str, object]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(reads.OFFERS, "handler", broken)
    key = make_key("offers:read")
    with TestClient(create_app(api_settings), raise_server_exceptions=False) as direct, \
            TestClient(create_app(api_settings), root_path="/shop",
                       raise_server_exceptions=False) as routed:
        for client in (direct, routed):
            resp = client.get("/v1/users/u-9/offers", headers=auth(key))
            assert resp.status_code == 500
            assert resp.json() == {"error": {"code": "internal_error",
                                             "message": "internal server error"}}
            assert ('route="/v1/users/{user_id}/offers",status="500"} 1.0'
                    in client.get("/metrics").text)
