"""Distributed tracing: POST /v1/events -> Kafka ``traceparent`` -> the worker's decision,
exported by OTLP/HTTP to a real receiver in the test (it decodes the protobuf
``ExportTraceServiceRequest``), against the real broker, Redis and PostgreSQL."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from prometheus_client import REGISTRY
from sqlalchemy import Engine, text
from starlette.testclient import TestClient

from api.app import create_app
from decisions.core.errors import ConfigError
from decisions.core.settings import Settings
from decisions.core.tracing import TRACEPARENT, record_parent, setup
from decisions.runtime.kafka import Producer, ensure_topics
from tests.api_helpers import KeyMaker, auth, dead_port
from tests.helpers import event, import_starter, minutes, now, running_worker, wait_for
from tests.test_api_events import consume
from tests.test_worker_rules import FakeScorer
from tests.test_worker_support import fast, offer_ruleset, publish

pytest_plugins = ["tests.api_fixtures"]


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    error: bool


class Receiver:
    """An OTLP/HTTP traces endpoint: ``POST /v1/traces`` with a protobuf body."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.paths.append(self.path)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.add(request)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add(self, request: ExportTraceServiceRequest) -> None:
        for resource_spans in request.resource_spans:
            service = next((a.value.string_value for a in resource_spans.resource.attributes
                            if a.key == "service.name"), "")
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {a.key: _value(a.value) for a in span.attributes}
                    self.spans.append(ReceivedSpan(
                        service, span.name, span.trace_id.hex(), span.span_id.hex(),
                        span.parent_span_id.hex(), attributes,
                        span.status.code == span.status.STATUS_CODE_ERROR))

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.trace_id == trace_id]


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    found.thread.start()
    yield found
    found.server.shutdown()
    found.server.server_close()


def _post_cart_story(client: TestClient, writer: dict[str, str], user: str) -> None:
    """A checkout view, then a cart over $200 a minute later: high-value-cart fires."""
    t0 = now() - minutes(10)
    first = client.post("/v1/events", json=event("page_view", user, t0, page="checkout"),
                        headers=writer)
    assert first.status_code == 202, first.text
    second = client.post("/v1/events", json=event(
        "add_to_cart", user, t0 + minutes(1), product_id="p-1", price=250.0, quantity=1),
        headers=writer)
    assert second.status_code == 202, second.text


def _served_offer(client: TestClient, reader: dict[str, str], user: str) -> dict[str, Any]:
    def offer() -> dict[str, Any] | None:
        body = client.get(f"/v1/users/{user}/offers", headers=reader).json()
        return body["offers"][0] if body.get("personalized") and body["offers"] else None
    found: dict[str, Any] = wait_for(offer)
    return found


def _decision_trace_ids(engine: Engine, user: str) -> list[str | None]:
    with engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT trace_id FROM decisions WHERE user_id = :u AND kind = 'offer'"),
            {"u": user}).scalars())


def test_one_events_trace_goes_from_the_api_through_the_worker_to_the_offer(
    api_settings: Settings, demo_catalog: object, make_key: KeyMaker, clean_db: Engine,
    receiver: Receiver,
) -> None:
    settings = replace(api_settings, tracing="on", tracing_sample_ratio=1.0,
                       otlp_endpoint=receiver.url)
    import_starter(settings)
    ensure_topics(settings)
    writer, reader = auth(make_key("events:write")), auth(make_key("offers:read"))
    with running_worker(settings), TestClient(create_app(settings)) as client:
        _post_cart_story(client, writer, "u-traced")
        offer = _served_offer(client, reader, "u-traced")
        rows = wait_for(lambda: _decision_trace_ids(clean_db, "u-traced"))
    # both processes flushed their spans as they stopped (the API's lifespan, Worker.close)
    trace_id = offer["trace_id"]
    assert len(trace_id) == 32 and int(trace_id, 16)
    assert rows == [trace_id]

    spans = receiver.trace(trace_id)
    by_name = {(s.service, s.name): s for s in spans}
    api_span = by_name[("decisions-api", "POST /v1/events")]
    publish = by_name[("decisions-api", f"{settings.events_topic} publish")]
    process = by_name[("decisions-worker", f"{settings.events_topic} process")]
    assert api_span.parent_id == ""  # the storefront sent no traceparent: a new trace
    assert publish.parent_id == api_span.span_id
    assert process.parent_id == publish.span_id  # through the record's header
    assert process.attributes["decisions.event_type"] == "add_to_cart"
    assert process.attributes["decisions.rules_fired"] >= 1
    steps = {s.name for s in spans if s.parent_id == process.span_id}
    # no model scores: no rule of the starter rulesets reads one
    assert steps == {"state", "rules", "actions", "effects", "publish", "archive"}
    assert api_span.attributes["http.response.status_code"] == 202
    # the page view before it is its own trace (one trace per request), with a worker span
    other = {s.trace_id for s in receiver.spans
             if s.name == f"{settings.events_topic} process"} - {trace_id}
    assert len(other) == 1
    assert all(path == "/v1/traces" for path in receiver.paths)


def test_a_storefronts_traceparent_is_continued(
    api_settings: Settings, demo_catalog: object, make_key: KeyMaker, receiver: Receiver,
) -> None:
    settings = replace(api_settings, tracing="on", tracing_sample_ratio=0.0,
                       otlp_endpoint=receiver.url)
    ensure_topics(settings, [settings.events_topic])
    writer = auth(make_key("events:write"))
    storefront = "4bf92f3577b34da6a3ce929d0e0e4736"
    with TestClient(create_app(settings)) as client:
        sampled = {**writer, "traceparent": f"00-{storefront}-00f067aa0ba902b7-01"}
        ok = client.post("/v1/events", json=event("page_view", "u-1", now(), page="home"),
                         headers=sampled)
        assert ok.status_code == 202
        # ratio 0: a request of its own is not traced: no span, no header
        plain = client.post("/v1/events", json=event("page_view", "u-2", now(), page="home"),
                            headers=writer)
        assert plain.status_code == 202
        # a storefront's unsampled trace is followed too: no span, nothing passed on
        unsampled = {**writer, "traceparent": f"00-{'1' * 32}-00f067aa0ba902b7-00"}
        assert client.post("/v1/events", json=event("page_view", "u-3", now(), page="home"),
                           headers=unsampled).status_code == 202
        # a request the API refuses is traced as such (a 4xx is not an error of ours)
        refused = client.post("/v1/events", json={"type": "nope"}, headers=sampled)
        assert refused.status_code == 422
        records = {r.key: dict(r.headers) for r in consume(settings, 3)}
    assert records[b"u-1"][TRACEPARENT].startswith(f"00-{storefront}-".encode())
    assert int(records[b"u-1"][TRACEPARENT][-2:], 16) & 1  # sampled
    assert TRACEPARENT not in records[b"u-2"]
    assert TRACEPARENT not in records[b"u-3"]
    traced = receiver.trace(storefront)
    assert sorted(s.name for s in traced) == [
        "POST /v1/events", "POST /v1/events", f"{settings.events_topic} publish"]
    assert {s.parent_id for s in traced if s.name == "POST /v1/events"} == {"00f067aa0ba902b7"}
    assert sorted(s.attributes["http.response.status_code"] for s in traced
                  if s.name == "POST /v1/events") == [202, 422]
    assert not any(s.error for s in traced)
    assert len({s.trace_id for s in receiver.spans}) == 1


def test_tracing_off_writes_no_header_and_no_trace_id(
    api_settings: Settings, demo_catalog: object, make_key: KeyMaker, clean_db: Engine,
) -> None:
    assert api_settings.tracing == "off"
    decided = "decisions_produce_to_decision_seconds_count"
    before = REGISTRY.get_sample_value(decided) or 0.0
    import_starter(api_settings)
    ensure_topics(api_settings)
    writer, reader = auth(make_key("events:write")), auth(make_key("offers:read"))
    with running_worker(api_settings) as worker, \
            TestClient(create_app(api_settings)) as client:
        assert worker.tracing is None
        assert client.app.state.api.tracing is None  # type: ignore[attr-defined]
        _post_cart_story(client, writer, "u-plain")
        offer = _served_offer(client, reader, "u-plain")
        rows = wait_for(lambda: _decision_trace_ids(clean_db, "u-plain"))
    assert "trace_id" not in offer
    assert rows == [None]
    # each event's Kafka timestamp to its decision (the worker runs in this process)
    assert (REGISTRY.get_sample_value(decided) or 0.0) - before >= 2
    records = consume(api_settings, 2)
    assert len(records) == 2
    assert all(TRACEPARENT not in dict(r.headers) for r in records)


def test_tracing_settings_are_checked() -> None:
    assert setup(Settings.from_env({}), "decisions-api") is None
    with pytest.raises(ConfigError, match="DECISIONS_TRACING="):
        setup(Settings.from_env({"DECISIONS_TRACING": "maybe"}), "decisions-api")
    with pytest.raises(ConfigError, match="DECISIONS_TRACING_SAMPLE_RATIO"):
        setup(Settings.from_env({"DECISIONS_TRACING": "on",
                                 "DECISIONS_TRACING_SAMPLE_RATIO": "1.5"}), "decisions-api")


@pytest.fixture(scope="module")
def tracing() -> Iterator[Any]:  # exports nothing: no span is made
    found = setup(Settings.from_env({}, tracing="on", otlp_endpoint="http://127.0.0.1:9/"),
                  "decisions-worker")
    assert found is not None
    yield found
    found.provider.shutdown()


@given(st.binary(max_size=80))
def test_any_header_bytes_are_a_parent_or_nothing(tracing: Any, value: bytes) -> None:
    """A record's headers come from any producer: never an exception, never a parent
    from a header that is not a sampled W3C traceparent."""
    parent = record_parent(tracing, [(TRACEPARENT, value)])
    if parent is not None:
        assert value.startswith(b"00-") and int(value[-2:], 16) & 1


@given(st.integers(1, 2**128 - 1), st.integers(1, 2**64 - 1), st.booleans())
def test_a_traceparent_names_its_trace(tracing: Any, trace_id: int, span_id: int,
                                       sampled: bool) -> None:
    value = b"00-%032x-%016x-%02x" % (trace_id, span_id, int(sampled))
    parent = record_parent(tracing, [("other", b"x"), (TRACEPARENT, value)])
    if not sampled:
        assert parent is None
    else:
        assert parent is not None
        assert tracing.trace_id(parent) == f"{trace_id:032x}"


def test_a_collector_that_is_away_is_one_line_naming_it(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "1")  # retries end within 1 s
    away = f"http://127.0.0.1:{dead_port()}"
    tracing = setup(Settings.from_env({}, tracing="on", tracing_sample_ratio=1.0,
                                      otlp_endpoint=away), "decisions-worker")
    assert tracing is not None
    root = tracing.request_parent({})
    assert root is not None
    for _ in range(3):
        tracing.record("step", tracing.child(root), root, time.time_ns(), time.time_ns())
    with caplog.at_level(logging.INFO):
        tracing.shutdown()  # exports what is queued: refused
    said = [r for r in caplog.records if r.name.startswith("opentelemetry")]
    assert len(said) == 1
    assert said[0].levelname == "WARNING" and not said[0].exc_info
    assert f"{away}/v1/traces" in said[0].getMessage()
    assert "DECISIONS_OTLP_ENDPOINT" in said[0].getMessage()



def test_a_record_from_any_producer_is_traced_with_its_model_scores(
    settings: Settings, clean_db: Engine, receiver: Receiver,
) -> None:
    """The worker follows a sampled ``traceparent`` whoever wrote the record; a rule on a
    model score gives the event a ``scores`` span."""
    settings = replace(fast(settings), tracing="on", otlp_endpoint=receiver.url)
    publish(settings, offer_ruleset("intent", rule_name="intent-cart", when={"all": [
        {"field": "event.type", "op": "eq", "value": "add_to_cart"},
        {"field": "score.purchase_intent", "op": "gte", "value": 0.5}]}))
    ensure_topics(settings)
    trace_id, producer_span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    header = f"00-{trace_id}-{producer_span}-01".encode()
    cart = event("add_to_cart", "u-scored", now() - minutes(1), product_id="p", price=5.0,
                 quantity=1)
    with running_worker(settings, scorer=FakeScorer()) as worker:
        producer = Producer(settings)
        producer.send_many(settings.events_topic, [("u-scored", cart)],
                           headers=lambda _value: [(TRACEPARENT, header)])
        producer.close()
        wait_for(lambda: worker.stats.processed == 1)
        rows = wait_for(lambda: _decision_trace_ids(clean_db, "u-scored"))
    assert rows == [trace_id]
    spans = receiver.trace(trace_id)
    process = next(s for s in spans if s.name == f"{settings.events_topic} process")
    assert process.parent_id == producer_span and process.service == "decisions-worker"
    assert {s.name for s in spans if s.parent_id == process.span_id} == {
        "state", "scores", "rules", "actions", "effects", "publish", "archive"}
