"""POST /v1/events: one event or a list, validated, produced to Kafka, 202 once acked.

A batch is all or nothing: if any event is invalid, none is sent and the 422 names every
bad field as ``[index].field``. 202 is sent only after the broker acknowledged every
record (``acks=all``); otherwise 503 with Retry-After, and the client resends the batch
(the worker drops duplicates by ``event_id``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from time import time_ns
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from api.auth import authenticate
from api.errors import BadRequest, PayloadTooLarge
from api.responses import json_response
from api.state import ApiState, get_api
from api.store import REDIS_ERRORS
from decisions.core.errors import DecisionsError, FieldError, RateLimited, ValidationError
from decisions.core.events import Event, TimeWindow, parse_event

if TYPE_CHECKING:
    from opentelemetry.trace import SpanContext


async def read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"request body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body larger than {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise BadRequest("client disconnected before the body was read") from None
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    if not body.strip():
        raise BadRequest("empty body", [FieldError("body", "expected a JSON object or list")])
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest("body is not valid JSON", [FieldError("body", str(exc))]) from None


async def check_rate(api: ApiState, key_prefix: str) -> None:
    """Fail open: when Redis is down, writes are not refused for want of a rate limit."""
    if not api.redis_breaker.allow():
        return
    try:
        verdict = await api.redis.rate_limit(key_prefix)
    except REDIS_ERRORS as exc:
        api.redis_breaker.failure(exc)
        return
    api.redis_breaker.success()
    if not verdict.allowed:
        api.metrics.rate_limited.inc()
        raise RateLimited("rate limit exceeded for this API key", verdict.retry_after)


def _integral(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def normalize(item: Any) -> Any:
    """JSON has one number type: a whole-number quantity written ``2.0`` is the integer 2."""
    props = item.get("properties") if isinstance(item, dict) else None
    if not isinstance(props, dict):
        return item
    props = dict(props)
    if "quantity" in props:
        props["quantity"] = _integral(props["quantity"])
    if isinstance(props.get("items"), list):
        props["items"] = [
            {**line, "quantity": _integral(line["quantity"])}
            if isinstance(line, dict) and "quantity" in line else line
            for line in props["items"]
        ]
    return {**item, "properties": props}


def validate(api: ApiState, data: Any) -> list[Event]:
    settings = api.settings
    batch = isinstance(data, list)
    items = data if batch else [data]
    if batch and not items:
        raise ValidationError("empty batch", [FieldError("body", "expected at least one event")])
    if len(items) > settings.max_batch_events:
        raise PayloadTooLarge(
            f"{len(items)} events in one request; at most {settings.max_batch_events}")
    events: list[Event] = []
    errors: list[FieldError] = []
    window = TimeWindow.of(settings.event_max_age_seconds, settings.event_max_future_seconds)
    now = datetime.now(UTC)  # one clock reading: a batch is judged as one
    for i, item in enumerate(items):
        prefix = f"[{i}]." if batch else ""
        item = normalize(item)
        try:
            event = parse_event(item, prefix=prefix, window=window, now=now)
        except ValidationError as exc:
            errors.extend(exc.details)
            continue
        if len(orjson.dumps(event.to_dict())) > settings.max_event_bytes:
            errors.append(FieldError(prefix.rstrip(".") or "body",
                                     f"event larger than {settings.max_event_bytes} bytes"))
            continue
        events.append(event)
    if errors:
        count = "1 invalid event" if not batch else "invalid events in the batch"
        raise ValidationError(f"{count}; nothing was accepted", errors)
    return events


async def post_events(request: Request) -> Response:
    api = get_api(request)
    if api.tracing is not None:
        parent = api.tracing.request_parent(request.headers)
        if parent is not None:
            return await traced_post_events(api, request, parent)
    events = await accept(api, request)
    await api.produce([(e.user_id, e.to_dict()) for e in events])
    return accepted(request, events)


async def accept(api: ApiState, request: Request) -> list[Event]:
    key = await authenticate(api, request, "events:write")
    await check_rate(api, key.prefix)
    body = await read_body(request, api.settings.api_max_body_bytes)
    return validate(api, parse_json(body))


def accepted(request: Request, events: list[Event]) -> Response:
    return json_response(request, {"accepted": len(events),
                                   "event_ids": [e.event_id for e in events]}, status=202)


async def traced_post_events(api: ApiState, request: Request, parent: SpanContext,
                             ) -> Response:
    """The same, traced: a server span (continuing the storefront's trace when its request
    carries a sampled ``traceparent``) and a producer span whose context every record
    carries in its ``traceparent`` header, for the worker's span of each event. Both are
    written when the request is answered (``Tracing.record``)."""
    tracing = api.tracing
    assert tracing is not None
    topic = api.settings.events_topic
    server = tracing.child(parent)
    publish = tracing.child(server)
    start, published, status, error, count = time_ns(), 0, 500, "unexpected error", 0
    try:
        events = await accept(api, request)
        count = len(events)
        published = time_ns()
        await api.produce([(e.user_id, e.to_dict()) for e in events],
                          tracing.traceparent(publish))
        status, error = 202, ""
        return accepted(request, events)
    except DecisionsError as exc:
        status = exc.status
        error = exc.message if exc.status >= 500 else ""  # a 4xx is the client's
        raise
    finally:
        end = time_ns()
        if published:
            tracing.record(f"{topic} publish", publish, server, published, end, {
                "messaging.system": "kafka", "messaging.operation.type": "send",
                "messaging.destination.name": topic,
                "messaging.batch.message_count": count}, tracing.kinds.PRODUCER,
                error=error)
        tracing.record("POST /v1/events", server, parent, start, end, {
            "http.request.method": "POST", "http.route": "/v1/events",
            "http.response.status_code": status, "decisions.events": count},
            tracing.kinds.SERVER, error=error)


routes = [Route("/v1/events", post_events, methods=["POST"])]
