"""Prometheus metrics of one API app (its own registry, so apps never collide in tests).

- ``decisions_api_request_seconds{route,method,status}``: latency histogram
- ``decisions_api_fallback_total{route,reason}``: reads served from fallback content
- ``decisions_api_breaker_state{dependency}``: 0 closed, 1 half-open, 2 open
- ``decisions_api_rate_limited_total``: requests refused with 429
- ``decisions_api_events_total``: events acknowledged by the broker
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.breaker import STATE_VALUES

BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
           2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram(
            "decisions_api_request_seconds", "API request latency by route and status",
            ["route", "method", "status"], registry=self.registry, buckets=BUCKETS,
        )
        self.fallbacks = Counter(
            "decisions_api_fallback", "Reads served from fallback content, by reason",
            ["route", "reason"], registry=self.registry,
        )
        self.breaker = Gauge(
            "decisions_api_breaker_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open",
            ["dependency"], registry=self.registry,
        )
        self.rate_limited = Counter(
            "decisions_api_rate_limited", "Requests refused by the per-key rate limit",
            registry=self.registry,
        )
        self.events = Counter(
            "decisions_api_events", "Events acknowledged by the broker", registry=self.registry,
        )

        self._children: dict[tuple[str, str, int], Any] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        child = self._children.get((route, method, status))
        if child is None:
            child = self.latency.labels(route, method, str(status))
            self._children[(route, method, status)] = child
        child.observe(seconds)

    def breaker_changed(self, dependency: str, state: str) -> None:
        self.breaker.labels(dependency).set(STATE_VALUES[state])

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI: times every HTTP request, labelled by the matched route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(path, scope["method"], status, time.perf_counter() - start)
