"""Distributed tracing with OpenTelemetry: one trace from ``POST /v1/events`` through the
Kafka record (W3C ``traceparent`` header) to the worker's decision.

Off by default (``DECISIONS_TRACING=off``): :func:`setup` then returns ``None`` without
importing the SDK, and every caller checks for ``None`` once per request, record or
batch, so tracing costs nothing on the hot paths. On, each process builds its own
``TracerProvider`` (not the global one: the API and a worker may share a process in
tests and in ``decisions up``) whose sampler follows a parent's sampled flag; the API
starts a trace for a share ``DECISIONS_TRACING_SAMPLE_RATIO`` of the requests that come
without one, deciding before any span is made; a batch processor exports by OTLP/HTTP
(protobuf) to ``DECISIONS_OTLP_ENDPOINT``, else to the standard
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT``, else to
``http://localhost:4318/v1/traces`` (Jaeger, the OpenTelemetry Collector, ...).
``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` are honoured by the SDK.

Kafka headers are written and read here (``traceparent`` values), without the
propagator machinery: a record's header is parsed once, and only sampled ones become
parents of the worker's spans.
"""

from __future__ import annotations

import logging
import random
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from decisions.core.errors import ConfigError
from decisions.core.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger(__name__)
TRACEPARENT = "traceparent"
MODES = ("off", "on")
DEFAULT_ENDPOINT = "http://localhost:4318/v1/traces"
QUEUE_SPANS = 32_768  # spans waiting for export, then dropped (the SDK's default: 2,048)
_HEADER = re.compile(rb"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def check(settings: Settings) -> None:
    if settings.tracing not in MODES:
        raise ConfigError(f"DECISIONS_TRACING={settings.tracing!r}: expected off or on")
    if not 0.0 <= settings.tracing_sample_ratio <= 1.0:
        raise ConfigError(f"DECISIONS_TRACING_SAMPLE_RATIO={settings.tracing_sample_ratio!r}: "
                          "expected a number from 0 to 1")


def endpoint(settings: Settings) -> str | None:
    """The OTLP/HTTP traces URL: a base URL (``http://jaeger:4318``) gets ``/v1/traces``;
    None lets the exporter read the standard ``OTEL_EXPORTER_OTLP_*`` variables."""
    url = settings.otlp_endpoint
    if not url:
        return None
    if urlsplit(url).path in ("", "/"):
        return url.rstrip("/") + "/v1/traces"
    return url


class Tracing:
    """A process's tracer and exporter; ``None`` in its place means tracing is off."""

    def __init__(self, provider: TracerProvider, service: str, sample_ratio: float = 1.0,
                 ) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("decisions")
        self._trace = trace
        self._propagator = TraceContextTextMapPropagator()
        self.service = service
        self.sample_ratio = sample_ratio

    # -- W3C trace context ------------------------------------------------------------
    def request_context(self, headers: Any) -> Context | None:
        """Whether a request is traced, and under which parent: a storefront's
        ``traceparent`` is followed (its sampled flag decides); without one, a new trace
        is started for ``sample_ratio`` of the requests, and the others (None) take the
        untraced path: no span, no header (workers never sample on their own)."""
        if TRACEPARENT in headers:
            return self._propagator.extract(headers)
        if self.sample_ratio >= 1.0 or random.random() < self.sample_ratio:
            from opentelemetry.context import Context

            return Context()  # a root: recorded (the sampler's root is always on)
        return None

    def traceparent(self, span: Span) -> bytes:
        """The header value naming ``span`` as the parent (sampled flag included)."""
        ctx = span.get_span_context()
        return b"00-%032x-%016x-%02x" % (ctx.trace_id, ctx.span_id, int(ctx.trace_flags))

    def parent(self, value: bytes) -> Context | None:
        """The remote parent named by a record's ``traceparent``; None when absent,
        malformed or not sampled (the producer's sampling decision is kept)."""
        found = _HEADER.match(value)
        if found is None or not int(found.group(3), 16) & 1:
            return None
        trace_id, span_id = int(found.group(1), 16), int(found.group(2), 16)
        if not trace_id or not span_id:
            return None
        trace = self._trace
        span_context = trace.SpanContext(trace_id, span_id, is_remote=True,
                                         trace_flags=trace.TraceFlags(1))
        return trace.set_span_in_context(trace.NonRecordingSpan(span_context))

    def trace_id(self, context: Context) -> str:
        return f"{self._trace.get_current_span(context).get_span_context().trace_id:032x}"

    def shutdown(self) -> None:
        """Export what is buffered, then stop the exporter's thread."""
        try:
            self.provider.shutdown()
        except Exception as exc:  # noqa: BLE001 - a collector that is away never stops a stop
            log.warning("tracing: spans not exported at shutdown (%s)", exc)


def record_parent(tracing: Tracing, headers: Any) -> Context | None:
    """The sampled parent in a Kafka record's headers (``[(key, bytes)]``), if any."""
    for key, value in headers or ():
        if key == TRACEPARENT and isinstance(value, bytes):
            return tracing.parent(value)
    return None


def setup(settings: Settings, service: str) -> Tracing | None:
    """The process's tracing, or None when ``DECISIONS_TRACING=off`` (nothing imported)."""
    check(settings)
    if settings.tracing == "off":
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

    resource = Resource.create()  # reads OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service}))
    # the ratio is applied before a root span is made (Tracing.request_context), so an
    # unsampled request costs no span at all; a parent's sampled flag is followed
    provider = TracerProvider(resource=resource, sampler=ParentBased(ALWAYS_ON))
    # a worker batch of 500 sampled events makes ~4,000 spans at once: the SDK's default
    # queue (2,048) would drop most of them
    provider.add_span_processor(BatchSpanProcessor(
        OTLPSpanExporter(endpoint=endpoint(settings)), max_queue_size=QUEUE_SPANS))
    log.info("tracing on: %s, sample ratio %g, OTLP to %s", service,
             settings.tracing_sample_ratio, endpoint(settings) or "the OTEL_* endpoint")
    return Tracing(provider, service, settings.tracing_sample_ratio)
