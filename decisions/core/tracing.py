"""Distributed tracing with OpenTelemetry: one trace from ``POST /v1/events`` through the
Kafka record (W3C ``traceparent`` header) to the worker's decision.

Off by default (``DECISIONS_TRACING=off``): :func:`setup` then returns ``None`` without
importing the SDK, and every caller checks for ``None`` once per request, record or
batch, so tracing costs nothing on the hot paths. On, each process builds its own
``TracerProvider`` (not the global one: the API and a worker may share a process in
tests and in ``decisions up``). A parent's sampled flag is followed; the API starts a
trace for a share ``DECISIONS_TRACING_SAMPLE_RATIO`` of the requests that come without
one, deciding before any span is made; a batch processor exports by OTLP/HTTP
(protobuf) to ``DECISIONS_OTLP_ENDPOINT``, else to the standard
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT``, else to
``http://localhost:4318/v1/traces`` (Jaeger, the OpenTelemetry Collector, ...).
``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` are honoured by the SDK.

W3C ``traceparent`` headers (of requests and Kafka records) are written and read here,
without the propagator machinery (``tracestate`` is not carried): a header is parsed
once, and only sampled ones become parents.
"""

from __future__ import annotations

import logging
import random
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from decisions.core.errors import ConfigError
from decisions.core.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.trace import SpanContext, SpanKind

log = logging.getLogger(__name__)
TRACEPARENT = "traceparent"
MODES = ("off", "on")
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
    """A process's tracing; ``None`` in its place means tracing is off.

    Spans are written once finished, with the times they ran: built as the SDK's
    ``ReadableSpan`` and handed to the export queue (:meth:`record`). The worker's steps
    interleave the events of a batch, so no span could be "current" while its step runs;
    and a span made this way costs a tenth of the CPU of starting and ending an SDK span
    (~1.5 against ~14 µs here; the protobuf encoding, ~14 µs a span, remains)."""

    def __init__(self, provider: TracerProvider, service: str, sample_ratio: float,
                 processor: SpanProcessor) -> None:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        from opentelemetry.trace.status import Status, StatusCode

        self.provider = provider
        self._trace = trace
        self._readable = ReadableSpan
        self._scope = InstrumentationScope("decisions")
        self._processor = processor
        self._error = lambda why: Status(StatusCode.ERROR, why)
        self.kinds = trace.SpanKind
        self.service = service
        self.sample_ratio = sample_ratio

    # -- W3C trace context ------------------------------------------------------------
    def request_parent(self, headers: Any) -> SpanContext | None:
        """Whether a request is traced: the context its span continues, or None (not
        traced: no span, no header). A storefront's ``traceparent`` is followed (its
        sampled flag decides; an unsampled one is not passed on: workers never sample on
        their own); without one, a new trace is started for ``sample_ratio`` of the
        requests, decided before anything is made. A new trace's "parent" is a context
        with the new trace id and span id 0 (:meth:`record` writes it as a root)."""
        value = headers.get(TRACEPARENT)
        if value is not None:
            found = _HEADER.match(value.strip().lower().encode("latin-1", "replace"))
            if found is not None and int(found.group(1), 16) and int(found.group(2), 16):
                if not int(found.group(3), 16) & 1:
                    return None
                return self._context(int(found.group(1), 16), int(found.group(2), 16), True)
        if self.sample_ratio >= 1.0 or random.random() < self.sample_ratio:
            return self._context(random.getrandbits(128) or 1, 0, False)
        return None

    def _context(self, trace_id: int, span_id: int, remote: bool) -> SpanContext:
        trace = self._trace
        return trace.SpanContext(trace_id, span_id, is_remote=remote,
                                 trace_flags=trace.TraceFlags(1))

    @staticmethod
    def traceparent(span: SpanContext) -> bytes:
        """The header value naming ``span`` as the parent (sampled)."""
        return b"00-%032x-%016x-01" % (span.trace_id, span.span_id)

    def parent(self, value: bytes) -> SpanContext | None:
        """The remote parent named by a record's ``traceparent``; None when absent,
        malformed or not sampled (the producer's sampling decision is kept)."""
        found = _HEADER.match(value)
        if found is None or not int(found.group(3), 16) & 1:
            return None
        trace_id, span_id = int(found.group(1), 16), int(found.group(2), 16)
        if not trace_id or not span_id:
            return None
        return self._context(trace_id, span_id, True)

    @staticmethod
    def trace_id(span_context: SpanContext) -> str:
        return f"{span_context.trace_id:032x}"

    # -- spans written after the fact (the worker's: its steps interleave events) -------
    def child(self, parent: SpanContext) -> SpanContext:
        """A new span's context in ``parent``'s trace."""
        return self._trace.SpanContext(parent.trace_id, random.getrandbits(64) or 1,
                                       is_remote=False, trace_flags=parent.trace_flags)

    def record(self, name: str, context: SpanContext, parent: SpanContext | None,
               start: int, end: int, attributes: dict[str, Any] | None = None,
               kind: SpanKind | None = None, error: str = "") -> None:
        """Export a finished span with the times given (ns since the epoch); ``parent``
        None or with span id 0: a root span. ``error``: the span failed, and why."""
        if parent is not None and not parent.span_id:
            parent = None
        extra: dict[str, Any] = {"status": self._error(error)} if error else {}
        self._processor.on_end(self._readable(
            name, context, parent, self.provider.resource, attributes,
            kind=kind if kind is not None else self.kinds.INTERNAL,
            instrumentation_scope=self._scope, start_time=start, end_time=end, **extra))

    def shutdown(self) -> None:
        """Export what is buffered, then stop the exporter's thread."""
        try:
            self.provider.shutdown()
        except Exception as exc:  # noqa: BLE001 - a collector that is away never stops a stop
            log.warning("tracing: spans not exported at shutdown (%s)", exc)


def record_parent(tracing: Tracing, headers: Any) -> SpanContext | None:
    """The sampled parent in a Kafka record's headers (``[(key, bytes)]``), if any."""
    for key, value in headers or ():
        if key == TRACEPARENT and isinstance(value, bytes):
            return tracing.parent(value)
    return None


class ExportProblems(logging.Filter):
    """The OTLP exporter's complaints (a warning per retry, an error per dropped batch,
    each with the HTTP library's whole message) as one line a minute that names the
    collector, what went wrong and the fix."""

    EXPORTER_LOGGER = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
    EVERY_SECONDS = 60.0

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.last = -self.EVERY_SECONDS

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now - self.last < self.EVERY_SECONDS:
            return False
        self.last = now
        said = record.getMessage()
        reason = next((why for why in ("Connection refused", "timed out", "Name or service "
                                       "not known", "timeout") if why in said), said[:120])
        record.msg = ("tracing: the OTLP collector at %s takes no spans (%s); they are "
                      "dropped meanwhile. Start it, or point DECISIONS_OTLP_ENDPOINT at one "
                      "(DECISIONS_TRACING=off stops tracing)")
        record.args = (self.url, reason)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = record.exc_text = None
        return True

    @classmethod
    def install(cls, url: str) -> None:
        """One filter per process (the exporter's logger is global): the latest tracing
        set up names its collector."""
        exporter_log = logging.getLogger(cls.EXPORTER_LOGGER)
        for old in [f for f in exporter_log.filters if isinstance(f, cls)]:
            exporter_log.removeFilter(old)
        exporter_log.addFilter(cls(url))


def setup(settings: Settings, service: str) -> Tracing | None:
    """The process's tracing, or None when ``DECISIONS_TRACING=off`` (nothing imported)."""
    check(settings)
    if settings.tracing == "off":
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()  # reads OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service}))
    # spans are made only for sampled requests and records (Tracing.request_parent,
    # Tracing.parent) and written by Tracing.record: the provider holds the resource and
    # the export queue; its sampler is never consulted
    provider = TracerProvider(resource=resource)
    # a worker batch of 500 sampled events makes ~4,000 spans at once: the SDK's default
    # queue (2,048) would drop most of them
    processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint(settings)),
                                   max_queue_size=QUEUE_SPANS)
    provider.add_span_processor(processor)
    ExportProblems.install(endpoint(settings) or "the OTEL_EXPORTER_OTLP_* endpoint")
    log.info("tracing on: %s, sample ratio %g, OTLP to %s", service,
             settings.tracing_sample_ratio, endpoint(settings) or "the OTEL_* endpoint")
    return Tracing(provider, service, settings.tracing_sample_ratio, processor)
