"""Kafka records in, events out: what the event contract refuses goes to the dead letters."""

from __future__ import annotations

from typing import Any

import orjson

from decisions.core.errors import ValidationError
from decisions.core.events import Event, parse_event


def parse(raw: bytes | None, max_bytes: int) -> tuple[Event | None, str, str]:
    """The record's event, or None with the dead letter's reason and detail."""
    if raw is None:
        return None, "empty", "record has no value"
    if len(raw) > max_bytes:
        return None, "too_large", f"{len(raw)} bytes > {max_bytes}"
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return None, "invalid_json", str(exc)
    try:
        return parse_event(data, internal=True), "", ""
    except ValidationError as exc:
        detail = "; ".join(str(d) for d in exc.details)
        reason = "unknown_type" if any(d.field == "type" and "unknown" in d.message
                                       for d in exc.details) else "invalid_event"
        return None, reason, detail


def key_of(record: Any) -> str | None:
    return record.key.decode("utf-8", "replace") if record.key else None
