"""/openapi.json checked against a real served API process with schemathesis; ops endpoints."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from starlette.testclient import TestClient

from api.app import create_app
from decisions.cli.stack.process import free_port
from decisions.core.settings import Settings
from decisions.runtime.kafka import ensure_topics
from tests.api_helpers import KeyMaker, auth

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


def test_openapi_matches_behaviour(live_api: tuple[str, str]) -> None:
    """Every operation, with generated requests: documented statuses, headers and bodies."""
    base_url, key = live_api
    schema = schemathesis.openapi.from_url(base_url + "/openapi.json")
    results: list[Any] = list(schema.get_all_operations())
    operations = [result.ok() for result in results]
    assert len(operations) == 10  # schemathesis leaves /openapi.json itself out
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=12, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            case.call_and_validate(base_url=base_url, headers=auth(key))

        check()


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
