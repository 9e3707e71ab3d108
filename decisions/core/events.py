"""The event contract (see ../shared/DESIGN.md) and its validation.

``parse_event`` turns raw JSON (already decoded) into an :class:`Event` or raises
:class:`ValidationError` whose details name each bad field (``properties.price``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from decisions.core.errors import FieldError, ValidationError

MAX_ID = 200
NUMBER = (int, float)

# type -> {property: (python types, required)}
PROPERTIES: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "page_view": {"page": ((str,), True), "url": ((str,), False)},
    "product_view": {
        "product_id": ((str,), True),
        "category": ((str,), False),
        "price": (NUMBER, False),
    },
    "click": {"element": ((str,), True), "product_id": ((str,), False)},
    "add_to_cart": {
        "product_id": ((str,), True),
        "price": (NUMBER, True),
        "quantity": ((int,), True),
        "category": ((str,), False),
    },
    "remove_from_cart": {
        "product_id": ((str,), True),
        "price": (NUMBER, True),
        "quantity": ((int,), True),
        "category": ((str,), False),
    },
    "purchase": {"order_id": ((str,), True), "total": (NUMBER, True), "items": ((list,), True)},
    "search": {"query": ((str,), True)},
    "consent": {"granted": ((bool,), True)},
}
# Produced by the worker's deadline schedule, never accepted from the storefront.
INTERNAL_TYPES: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "timer": {"timer": ((str,), True), "due": ((str,), False)}
}
EVENT_TYPES = tuple(PROPERTIES)
_WITH_INTERNAL = {**PROPERTIES, **INTERNAL_TYPES}  # what the worker accepts
_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    list: "a list",
    bool: "a boolean",
}


@dataclass(frozen=True)
class Event:
    event_id: str
    type: str
    user_id: str
    ts: datetime
    properties: dict[str, Any] = field(default_factory=dict)

    @cached_property  # read by the state script call, the rule fact and the timers
    def ts_ms(self) -> int:
        return int(self.ts.timestamp() * 1000)

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "type": self.type,
            "user_id": self.user_id,
            "ts": format_ts(self.ts),
            "properties": self.properties,
        }


def format_ts(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: str | datetime) -> datetime:
    """An ISO 8601 date-time (``Z`` allowed) as an aware UTC datetime; one without a time
    zone is taken as UTC. The one parser of times outside events (windows, forms, CLI);
    raises ``ValueError``."""
    ts = value if isinstance(value, datetime) else datetime.fromisoformat(
        value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value)
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def parse_ts(value: str) -> datetime:
    ts = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    if ts.tzinfo is None:
        raise ValueError("no timezone")
    return ts.astimezone(UTC)


def _type_name(types: tuple[type, ...]) -> str:
    if types == NUMBER:
        return "a number"
    return _TYPE_NAMES.get(types[0], types[0].__name__)


def _show(value: Any) -> str:
    try:
        return json.dumps(value)[:80]
    except (TypeError, ValueError):
        return repr(value)[:80]


def _is(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in types:
        return False
    return isinstance(value, types)


def parse_event(data: Any, *, prefix: str = "", internal: bool = False) -> Event:
    errors: list[FieldError] = []

    def err(name: str, message: str) -> None:
        errors.append(FieldError(prefix + name, message))

    if not isinstance(data, dict):
        raise ValidationError(
            "invalid event", [FieldError(prefix.rstrip("."), "expected a JSON object")]
        )
    known = {"event_id", "type", "user_id", "ts", "properties"}
    for key in data:
        if key not in known:
            err(key, "unknown field")
    for key in ("event_id", "user_id"):
        value = data.get(key)
        if value is None:
            err(key, "required")
        elif not isinstance(value, str) or not value.strip():
            err(key, "expected a non-empty string")
        elif len(value) > MAX_ID:
            err(key, f"longer than {MAX_ID} characters")
    etype = data.get("type")
    schema = _WITH_INTERNAL if internal else PROPERTIES
    if etype is None:
        err("type", "required")
    elif etype not in schema:
        err("type", f"unknown event type {etype!r}; expected one of {', '.join(PROPERTIES)}")
    ts: datetime | None = None
    raw_ts = data.get("ts")
    if raw_ts is None:
        err("ts", "required")
    elif not isinstance(raw_ts, str):
        err("ts", "expected an ISO 8601 timestamp string")
    else:
        try:
            ts = parse_ts(raw_ts)
        except ValueError:
            err("ts", f"expected an ISO 8601 timestamp with timezone, got {raw_ts!r}")
    props = data.get("properties", {})
    if not isinstance(props, dict):
        err("properties", "expected an object")
        props = {}
    elif isinstance(etype, str) and etype in schema:
        for name, (types, required) in schema[etype].items():
            if name not in props:
                if required:
                    err(f"properties.{name}", f"required for {etype}")
                continue
            if not _is(props[name], types):
                err(f"properties.{name}", f"expected {_type_name(types)}, got {_show(props[name])}")
        _check_values(etype, props, err)
    if errors:
        raise ValidationError("invalid event", errors)
    assert ts is not None and isinstance(etype, str)
    return Event(str(data["event_id"]), etype, str(data["user_id"]), ts, dict(props))


def _check_values(etype: str, props: dict[str, Any], err: Any) -> None:
    price: Any = props.get("price")
    if _is(price, NUMBER) and price < 0:
        err("properties.price", "must not be negative")
    qty: Any = props.get("quantity")
    if etype in ("add_to_cart", "remove_from_cart") and _is(qty, (int,)) and qty <= 0:
        err("properties.quantity", "must be at least 1")
    if etype == "purchase" and isinstance(props.get("items"), list):
        for i, item in enumerate(props["items"]):
            where = f"properties.items[{i}]"
            if not isinstance(item, dict):
                err(where, "expected an object")
                continue
            if not isinstance(item.get("product_id"), str):
                err(where + ".product_id", "expected a string")
            if not _is(item.get("price"), NUMBER):
                err(where + ".price", "expected a number")
            if not _is(item.get("quantity"), (int,)):
                err(where + ".quantity", "expected an integer")
