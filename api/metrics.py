"""Prometheus metrics of one API app (its own registry, so apps never collide in tests).

- ``decisions_api_request_seconds{route,method,status}``: latency histogram
- ``decisions_api_fallback_total{route,reason}``: reads served from fallback content
- ``decisions_api_breaker_state{dependency}``: 0 closed, 1 half-open, 2 open
- ``decisions_api_rate_limited_total``: requests refused with 429
- ``decisions_api_events_total``: events acknowledged by the broker
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.breaker import STATE_VALUES

BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
           2.5, 5.0)


class LatencyHistogram(Collector):
    """``decisions_api_request_seconds{route,method,status}``, kept in plain lists.

    Every request is observed, so this is on the hot path: a bisect and two additions
    (prometheus_client's Histogram takes a lock per bucket and per sum, several µs). The
    counts are turned into the standard histogram exposition when /metrics is scraped.
    Observed on the event loop only (no locks needed).
    """

    name = "decisions_api_request_seconds"
    documentation = "API request latency by route and status"
    labels = ("route", "method", "status")

    def __init__(self, buckets: tuple[float, ...] = BUCKETS) -> None:
        self.bounds = (*buckets, float("inf"))
        self.les = [floatToGoString(b) for b in self.bounds]
        self.series: dict[tuple[str, str, int], list[float]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        counts = self.series.get((route, method, status))
        if counts is None:
            counts = self.series[(route, method, status)] = [0] * (len(self.bounds) + 1)
        counts[bisect_left(self.bounds, seconds)] += 1
        counts[-1] += seconds  # the sum

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labels)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for (route, method, status), counts in list(self.series.items()):
            cumulative, buckets = 0.0, []
            for le, count in zip(self.les, counts, strict=False):
                cumulative += count
                buckets.append((le, cumulative))
            family.add_metric([route, method, str(status)], buckets, counts[-1])
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = LatencyHistogram()
        self.registry.register(self.latency)
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
        self.observe = self.latency.observe

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
