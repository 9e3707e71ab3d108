"""/openapi.json checked against a real served API process with schemathesis; ops endpoints."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance
from starlette.testclient import TestClient

from api.app import create_app
from decisions.cli.stack.process import free_port
from decisions.core.events import EARLIEST, LATEST, format_ts, parse_ts
from decisions.core.settings import Settings
from decisions.runtime.kafka import ensure_topics
from tests.api_helpers import KeyMaker, auth
from tests.helpers import import_starter, wait_for
from tests.test_worker_processes import try_scrape
from tests.test_worker_support import fast, start_worker, stop

pytest_plugins = ["tests.api_fixtures"]


@pytest.fixture
def live_api(api_settings: Settings, demo_catalog: object,
             make_key: KeyMaker) -> Iterator[tuple[str, str]]:
    """The API served by uvicorn on a free port (a real HTTP server, in a thread)."""
    ensure_topics(api_settings, [api_settings.events_topic])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(api_settings), host="127.0.0.1",
                                           port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", make_key("admin")
    server.should_exit = True
    thread.join(10)


def recent_ts(item: Any) -> None:
    """A generated event time that parses and is in range moves into the window of
    accepted times (the same offset from now each time: replays stay alike), so generated
    events reach the worker; junk and out-of-range times stay as generated."""
    if not isinstance(item, dict) or not isinstance(item.get("ts"), str):
        return
    try:
        ts = parse_ts(item["ts"])
    except ValueError:
        return
    if EARLIEST <= ts < LATEST:
        age = timedelta(seconds=int(ts.timestamp()) % (24 * 3600))
        item["ts"] = format_ts(datetime.now(UTC) - age)


def fuzz(operation: Any, base_url: str, key: str, counts: Counter[str], *, examples: int,
         excluded: list[Any]) -> None:
    """Generated requests of one operation, each response checked; counts what it saw."""

    @given(case=operation.as_strategy())
    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case: Any) -> None:
        if operation.label == "POST /v1/events":
            for item in case.body if isinstance(case.body, list) else [case.body]:
                recent_ts(item)
        response = case.call(base_url=base_url, headers=auth(key))
        counts["cases"] += 1
        counts["server_errors"] += response.status_code >= 500
        if response.status_code == 202:
            counts["events_accepted"] += response.json()["accepted"]
        case.validate_response(response, excluded_checks=excluded)

    check()


def test_openapi_matches_behaviour_with_the_worker_beside(
        live_api: tuple[str, str], api_settings: Settings, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Every operation, with generated requests: documented statuses, headers and bodies,
    never a server error; the events accepted meanwhile reach a worker process, which
    stays alive and decides every one of them (none is dead-lettered), its lag drained.

    POST /v1/events is exempt from "schema-valid data is accepted" only: the window of
    accepted event times (around now) cannot be written in JSON Schema, so a generated
    ``ts`` of 2000-01-01 is rightly refused (422 naming ``ts``)."""
    base_url, key = live_api
    import_starter(api_settings)
    port = free_port()
    worker = start_worker(fast(api_settings), tmp_path / "worker.log",
                          DECISIONS_WORKER_METRICS_PORT=str(port),
                          DECISIONS_WORKER_LAG_INTERVAL_SECONDS="0.2")
    counts: Counter[str] = Counter()
    try:
        schema = schemathesis.openapi.from_url(base_url + "/openapi.json")
        results: list[Any] = list(schema.get_all_operations())
        operations = [result.ok() for result in results]
        assert len(operations) == 11  # schemathesis leaves /openapi.json itself out
        for operation in operations:
            events = operation.label == "POST /v1/events"
            fuzz(operation, base_url, key, counts, examples=60 if events else 12,
                 excluded=[positive_data_acceptance] if events else [])

        def drained() -> dict[str, float] | None:
            metrics = try_scrape(port)
            decided = sum(v for k, v in metrics.items()
                          if k.startswith(("decisions_events_processed_total{",
                                           "decisions_events_duplicates_total")))
            done = decided >= counts["events_accepted"] \
                and metrics.get("decisions_consumer_lag") == 0
            return metrics if done else None

        metrics = wait_for(drained, timeout=60, interval=0.3)
        alive = worker.poll() is None
    finally:
        stop(worker)
    dead = sum(v for k, v in metrics.items()
               if k.startswith("decisions_events_dead_lettered_total{"))
    with capsys.disabled():
        print(f"\nschemathesis: {counts['cases']} cases, {counts['server_errors']} server "
              f"errors; {counts['events_accepted']} events accepted; worker alive: {alive}, "
              f"lag {metrics['decisions_consumer_lag']:.0f}, dead-lettered {dead:.0f}")
    assert alive, (tmp_path / "worker.log").read_text()[-3000:]
    assert counts["server_errors"] == 0 and counts["cases"] >= 100
    assert counts["events_accepted"] > 0 and dead == 0


def test_openapi_lists_every_route(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    routes = {(m.upper(), path) for path, ops in doc["paths"].items() for m in ops}
    served = {(method, route.path) for route in client.app.routes  # type: ignore[attr-defined]
              for method in (route.methods or ()) if method != "HEAD"}
    assert routes == served


def test_healthz_readyz_metrics(client: TestClient, make_key: KeyMaker) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready" and body["failed"] == []
    assert {"redis", "postgres", "kafka", "catalog"} <= set(body["checks"])
    assert body["checks"]["catalog"]["products"] == 40
    client.get("/v1/users/u-1/offers", headers=auth(make_key("offers:read")))
    client.get("/v1/users/u-1/offers")
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert ('decisions_api_request_seconds_count{method="GET",'
            'route="/v1/users/{user_id}/offers",status="200"} 1.0') in text
    assert 'route="/v1/users/{user_id}/offers",status="401"} 1.0' in text
    assert 'decisions_api_breaker_state{dependency="postgres"} 0.0' in text
    assert 'decisions_api_fallback_total{reason="no_offers"' in text
    missing = client.get("/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_served_process_keeps_connections_alive(live_api: tuple[str, str]) -> None:
    base_url, key = live_api
    with httpx.Client(base_url=base_url, headers=auth(key)) as http:
        codes = {http.get("/v1/users/u-1/recommendations").status_code for _ in range(20)}
        head = http.head("/v1/users/u-1/offers")
        assert head.status_code == 200 and head.content == b"" and head.headers["etag"]
        assert http.get("/v1/users/u-1/offers").status_code == 200  # connection still fine
    assert codes == {200}
