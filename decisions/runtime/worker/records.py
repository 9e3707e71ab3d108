"""Kafka records in, events out: what the event contract refuses goes to the dead letters.

:func:`parse` never raises: a record is an :class:`Event` to decide, or the reason
and detail of its dead letter (see docs/worker.md, "Dead letters"). The event contract
(``decisions.core.events``) is applied with the intake time window, measured from when
the record was produced, so events that waited in the topic (a worker outage) are not
refused for their age.

Timer events are the worker's own: it signs each one it produces (an HMAC of the record's
value with ``DECISIONS_SECRET_KEY`` in the ``decisions.timer`` header, :func:`timer_headers`),
and a ``timer`` record without a valid signature is dead-lettered as ``forged_timer``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from decisions.core.errors import ValidationError
from decisions.core.events import Event, TimeWindow, parse_event
from decisions.core.settings import Settings

log = logging.getLogger(__name__)
TIMER_HEADER = "decisions.timer"
Headers = list[tuple[str, bytes]]


def intake_window(settings: Settings) -> TimeWindow:
    return TimeWindow.of(settings.event_max_age_seconds, settings.event_max_future_seconds)


def _signature(secret: str, value: bytes) -> bytes:
    return hmac.new(secret.encode(), b"timer\x00" + value, hashlib.sha256).hexdigest().encode()


def timer_headers(settings: Settings) -> Callable[[bytes], Headers]:
    """The headers of a timer record the worker produces, from its value bytes."""
    secret = str(settings.secret_key)
    return lambda value: [(TIMER_HEADER, _signature(secret, value))]


def _signed(record: Any, secret: str) -> bool:
    sent = [v for k, v in (record.headers or ()) if k == TIMER_HEADER]
    return len(sent) == 1 and isinstance(sent[0], bytes) \
        and hmac.compare_digest(sent[0], _signature(secret, record.value))


def _sent_at(record: Any, now: datetime, settings: Settings) -> datetime | None:
    """When the record was produced (its Kafka timestamp), kept within the archive's
    retention and now: a producer's clock (or a forged timestamp) moves the age bound
    that far at most."""
    stamp = getattr(record, "timestamp", None)
    if not isinstance(stamp, int) or stamp < 0:
        return None
    oldest = now - timedelta(days=settings.event_retention_days)
    try:
        sent = datetime.fromtimestamp(stamp / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return now
    return min(max(sent, oldest), now)


def parse(record: Any, settings: Settings, window: TimeWindow | None = None,
                 now: datetime | None = None) -> tuple[Event | None, str, str]:
    """``(event, "", "")``, or ``(None, reason, detail)`` for the dead-letter topic."""
    raw = record.value
    if raw is None:
        return None, "empty", "record has no value"
    if len(raw) > settings.max_event_bytes:
        return None, "too_large", f"{len(raw)} bytes > {settings.max_event_bytes}"
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return None, "invalid_json", str(exc)
    now = now or datetime.now(UTC)
    timer = isinstance(data, dict) and data.get("type") == "timer"
    if timer and not _signed(record, str(settings.secret_key)):
        return None, "forged_timer", "a timer event not produced by a worker (no valid " \
            f"{TIMER_HEADER} header); timers are the worker's own"
    try:
        if timer:  # signed: due when it was fired, however long the worker was away
            return parse_event(data, internal=True), "", ""
        return parse_event(data, window=window or intake_window(settings), now=now,
                           sent=_sent_at(record, now, settings)), "", ""
    except ValidationError as exc:
        detail = "; ".join(str(d) for d in exc.details)
        if any(d.field == "type" and d.message.startswith("unknown") for d in exc.details):
            return None, "unknown_type", detail
        if any(d.field == "ts" and d.message.startswith(("more than", "older than", "outside"))
               for d in exc.details):
            return None, "out_of_window", detail
        return None, "invalid_event", detail
    except Exception as exc:  # a record's fault never stops the stream
        log.exception("unexpected error parsing a record; dead-lettered")
        return None, "invalid_event", f"{type(exc).__name__}: {exc}"


def key_of(record: Any) -> str | None:
    return record.key.decode("utf-8", "replace") if record.key else None
