"""POST /v1/events: validation, batching, produce to the real broker, 503 when it is down."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition
from starlette.testclient import TestClient

from api.app import create_app
from decisions.core.settings import Settings
from decisions.runtime.kafka import ensure_topics
from tests.api_helpers import KeyMaker, auth, dead_port

pytest_plugins = ["tests.api_fixtures"]



# a minute ago, to the second (event times are accepted within a window around now)
TS = (datetime.now(UTC) - timedelta(minutes=1)).replace(microsecond=0)
TS_TEXT = TS.isoformat().replace("+00:00", "Z")


def event(n: int, user: str = "u-1", ts_: str = "", **props: Any) -> dict[str, Any]:
    return {"event_id": f"e-{n}", "type": "add_to_cart", "user_id": user,
            "ts": ts_ or TS_TEXT,
            "properties": {"product_id": "p-9", "price": 120.0, "quantity": 2, **props}}


@pytest.fixture
def topics(api_settings: Settings) -> Settings:
    ensure_topics(api_settings, [api_settings.events_topic])
    return api_settings


def consume(settings: Settings, expected: int, timeout: float = 10.0) -> list[Any]:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                             enable_auto_commit=False, consumer_timeout_ms=500)
    try:
        parts = [TopicPartition(settings.events_topic, p)
                 for p in consumer.partitions_for_topic(settings.events_topic) or ()]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=300).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


@pytest.fixture
def writer(make_key: KeyMaker) -> dict[str, str]:
    return auth(make_key("events:write"))


def test_one_event_is_acknowledged_then_202(
    topics: Settings, client: TestClient, writer: dict[str, str]
) -> None:
    resp = client.post("/v1/events", json=event(1, user="u-42"), headers=writer)
    assert resp.status_code == 202
    assert resp.json() == {"accepted": 1, "event_ids": ["e-1"]}
    records = consume(topics, 1)
    assert [r.key for r in records] == [b"u-42"]
    value = orjson.loads(records[0].value)
    assert value["event_id"] == "e-1" and value["properties"]["price"] == 120.0
    assert value["ts"] == TS_TEXT.replace("Z", ".000Z")


def test_a_batch_is_produced_whole(
    topics: Settings, client: TestClient, writer: dict[str, str]
) -> None:
    batch = [event(i, user=f"u-{i % 7}") for i in range(50)]
    resp = client.post("/v1/events", content=orjson.dumps(batch),
                       headers={**writer, "Content-Type": "application/json"})
    assert resp.status_code == 202 and resp.json()["accepted"] == 50
    records = consume(topics, 50)
    assert sorted(orjson.loads(r.value)["event_id"] for r in records) == sorted(
        f"e-{i}" for i in range(50))
    assert all(r.key == orjson.loads(r.value)["user_id"].encode() for r in records)


def test_bad_events_get_field_errors_and_nothing_is_sent(
    topics: Settings, client: TestClient, writer: dict[str, str]
) -> None:
    bad = event(2, price=-1)
    del bad["user_id"]
    resp = client.post("/v1/events", json=[event(1), bad, {"type": "nope"}], headers=writer)
    assert resp.status_code == 422
    error = resp.json()["error"]
    assert error["code"] == "validation_error"
    fields = {d["field"] for d in error["details"]}
    assert {"[1].user_id", "[1].properties.price", "[2].type", "[2].event_id"} <= fields
    single = client.post("/v1/events", json=event(3, quantity="two"), headers=writer)
    assert single.status_code == 422
    [detail] = single.json()["error"]["details"]
    assert detail["field"] == "properties.quantity"
    assert detail["message"].startswith("expected an integer")
    timer = {**event(4), "type": "timer", "properties": {"timer": "t"}}
    assert client.post("/v1/events", json=timer, headers=writer).status_code == 422
    assert consume(topics, 1, timeout=1.5) == []


def test_body_errors(api_settings: Settings, demo_catalog: object, writer: dict[str, str]) -> None:
    small = replace(api_settings, max_batch_events=3, api_max_body_bytes=2000)
    with TestClient(create_app(small)) as test_client:
        not_json = test_client.post("/v1/events", content=b"{nope", headers=writer)
        assert not_json.status_code == 400
        assert not_json.json()["error"]["details"][0]["field"] == "body"
        assert test_client.post("/v1/events", content=b"", headers=writer).status_code == 400
        assert test_client.post("/v1/events", json=[], headers=writer).status_code == 422
        too_many = test_client.post("/v1/events", json=[event(i) for i in range(4)],
                                    headers=writer)
        assert too_many.status_code == 413
        assert too_many.json()["error"]["code"] == "payload_too_large"
        huge = test_client.post("/v1/events", content=b"[" + b" " * 3000 + b"]",
                                headers=writer)
        assert huge.status_code == 413


def test_broker_down_is_503_with_retry_after_never_202(
    api_settings: Settings, demo_catalog: object, writer: dict[str, str]
) -> None:
    down = replace(api_settings, kafka_bootstrap=f"127.0.0.1:{dead_port()}",
                   breaker_reset_seconds=30)
    with TestClient(create_app(down)) as test_client:
        for _ in range(4):
            resp = test_client.post("/v1/events", json=event(1), headers=writer)
            assert resp.status_code == 503
            assert int(resp.headers["retry-after"]) >= 1
            assert resp.json()["error"]["code"] == "service_unavailable"
        # the breaker is open now: refused at once, without trying the broker
        start = time.perf_counter()
        assert test_client.post("/v1/events", json=event(1), headers=writer).status_code == 503
        assert time.perf_counter() - start < 0.5
        assert 'decisions_api_breaker_state{dependency="kafka"} 2.0' in test_client.get(
            "/metrics").text



# The cases of issue #17, points 1 and 2: each answered 4xx naming its field, not 500.
def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


ISSUE_CASES: dict[str, tuple[bytes, str]] = {
    "ts in year 9999": (orjson.dumps(event(1, ts_="9999-12-31T23:59:59Z")), "ts"),
    "ts of year 1 with +01:00": (orjson.dumps(event(1, ts_="0001-01-01T00:00:00+01:00")), "ts"),
    "ts of 9999 with -01:00": (orjson.dumps(event(1, ts_="9999-12-31T23:30:00-01:00")), "ts"),
    "NUL in user_id": (orjson.dumps(event(1, user="u\x00")), "user_id"),
    "NUL in a property": (orjson.dumps(event(1, category="a\x00")), "properties.category"),
    "price 1e308": (orjson.dumps(event(1, price=1e308, quantity=10)), "properties.price"),
    "quantity 2**64": (orjson.dumps(event(1)).replace(b'"quantity":2',
                                                      b'"quantity":18446744073709551616'),
                       "properties.quantity"),
    "type {}": (orjson.dumps({**event(1), "type": {}}), "type"),
    "type []": (orjson.dumps({**event(1), "type": []}), "type"),
    "nested 300 deep": (orjson.dumps(event(1, deep="D")).replace(b'"D"', _deep(300)),
                        "properties.deep"),
    "user_id of U+0085": (orjson.dumps(event(1, user="\x85")), "user_id"),
    "spread timestamps": (orjson.dumps([
        event(i, ts_=f"{1990 + i // 12}-{i % 12 + 1:02d}-01T00:00:00Z") for i in range(400)]),
        "[0].ts"),
}


@pytest.mark.parametrize("name", sorted(ISSUE_CASES))
def test_bad_input_gets_4xx_naming_the_field(
    name: str, topics: Settings, client: TestClient, writer: dict[str, str]
) -> None:
    body, field = ISSUE_CASES[name]
    resp = client.post("/v1/events", content=body,
                       headers={**writer, "Content-Type": "application/json"})
    assert 400 <= resp.status_code < 500, resp.text
    error = resp.json()["error"]
    assert error["code"] in {"validation_error", "bad_request"}
    assert any(d["field"].startswith(field) for d in error["details"]), error
