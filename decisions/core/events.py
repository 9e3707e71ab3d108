"""The event contract (see ../shared/DESIGN.md) and its validation.

``parse_event`` turns raw JSON (already decoded) into an :class:`Event` or raises
:class:`ValidationError` whose details name each bad field (``properties.price``). It
raises nothing else, whatever it is given: every bound the rest of the system relies on
is checked here, once, for the API, the worker and the command line alike (see
docs/api.md, "What an event may hold"):

- ids: 1-200 characters, none of them a control character (U+0000-U+001F,
  U+007F-U+009F), a line or paragraph separator or a lone surrogate; no white space at
  either end (so an id is never blank);
- ``type``: a string naming a known type;
- ``ts``: ISO 8601 with a time zone, between 1970 and 2999 in UTC; with a
  :class:`TimeWindow`, also within its bounds around now;
- properties: JSON values only, nested at most ``MAX_DEPTH`` levels; no string or key with
  a NUL character or a lone surrogate; every number finite and within
  ±``MAX_NUMBER`` (2^53 - 1: exact in every JSON parser, Lua and PostgreSQL alike).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from decisions.core.errors import FieldError, ValidationError

MAX_ID = 200
MAX_DEPTH = 10  # levels of objects and lists, ``properties`` itself being the first
MAX_NUMBER = 2**53 - 1
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)  # exclusive
NUMBER = (int, float)


def id_pattern(also_not: str = "") -> str:
    """The regular expression of an id (Python's ``re`` and JSON Schema's ECMA-262 read it
    alike; api/openapi.py publishes it). ``also_not``: characters to exclude as well. Lone
    surrogates, which no JSON document can carry to us, are refused apart (a pattern that
    names them does not compile in every JSON Schema engine)."""
    bad = r"\x00-\x1f\x7f-\x9f\u2028\u2029" + also_not
    return rf"^[^\s{bad}](?:[^{bad}]*[^\s{bad}])?$"


ID_PATTERN = id_pattern()
_ID = re.compile(ID_PATTERN)
_BAD_CHAR = re.compile(r"[\x00\ud800-\udfff]")  # PostgreSQL and UTF-8 refuse these

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


@dataclass(frozen=True)
class TimeWindow:
    """Event times accepted on intake, around now (``DECISIONS_EVENT_MAX_AGE_SECONDS``,
    ``DECISIONS_EVENT_MAX_FUTURE_SECONDS``). Simulations (dry runs, backtests) parse
    without one: their events are as old as they are."""

    max_age: timedelta
    max_future: timedelta

    @classmethod
    def of(cls, max_age_seconds: float, max_future_seconds: float) -> TimeWindow:
        return cls(timedelta(seconds=max_age_seconds), timedelta(seconds=max_future_seconds))

    def problem(self, ts: datetime, now: datetime, sent: datetime | None = None) -> str | None:
        """Why ``ts`` is refused at ``now``, or None. ``sent``: when the event was sent
        (a record's produce time), the reference of the age bound when known, so an event
        accepted on time is not refused for waiting in the topic."""
        latest = now + self.max_future
        if ts > latest:
            return (f"more than {_span(self.max_future)} in the future "
                    f"(latest accepted now: {format_ts(latest)})")
        oldest = (sent if sent is not None else now) - self.max_age
        if ts < oldest:
            return f"older than {_span(self.max_age)} (oldest accepted: {format_ts(oldest)})"
        return None


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} seconds"


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
    """ISO 8601 with a time zone, in UTC; ValueError otherwise (also when the UTC time
    falls outside the years 1-9999, e.g. ``0001-01-01T00:00:00+01:00``)."""
    ts = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    if ts.tzinfo is None:
        raise ValueError("no timezone")
    try:
        return ts.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range in UTC") from None


def _type_name(types: tuple[type, ...]) -> str:
    if types == NUMBER:
        return "a number"
    return _TYPE_NAMES.get(types[0], types[0].__name__)


def _show(value: Any) -> str:
    try:
        return json.dumps(value)[:80]
    except (TypeError, ValueError, RecursionError):
        return type(value).__name__


def _is(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in types:
        return False
    return isinstance(value, types)


def check_id(value: Any) -> str | None:
    """Why ``value`` is not an id (user, event), or None."""
    if not isinstance(value, str):
        return "expected a non-empty string"
    if len(value) > MAX_ID:
        return f"longer than {MAX_ID} characters"
    if not _ID.match(value) or _BAD_CHAR.search(value):
        if not value.strip():
            return "expected a non-empty string (not only white space)"
        return ("white space at either end, a control character, a line separator or a lone "
                "surrogate is not allowed")
    return None


def parse_event(data: Any, *, prefix: str = "", internal: bool = False,
                window: TimeWindow | None = None, now: datetime | None = None,
                sent: datetime | None = None) -> Event:
    """``window``: refuse an event time outside it around ``now`` (default: the clock);
    ``sent`` when known is the reference of its age bound (see :class:`TimeWindow`)."""
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
            err(_key_name(key), "unknown field")
    for key in ("event_id", "user_id"):
        value = data.get(key)
        if value is None:
            err(key, "required")
        elif (problem := check_id(value)) is not None:
            err(key, problem)
    etype = data.get("type")
    schema = _WITH_INTERNAL if internal else PROPERTIES
    if etype is None:
        err("type", "required")
    elif not isinstance(etype, str):
        err("type", f"expected a string, got {_show(etype)}")
    elif etype not in schema:
        err("type", f"unknown event type {etype[:80]!r}; expected one of {', '.join(PROPERTIES)}")
    ts = _parse_ts_field(data.get("ts"), err, window, now, sent)
    props = data.get("properties", {})
    if not isinstance(props, dict):
        err("properties", "expected an object")
        props = {}
    else:
        _check_json(props, "properties", 1, err)
        if isinstance(etype, str) and etype in schema:
            for name, (types, required) in schema[etype].items():
                if name not in props:
                    if required:
                        err(f"properties.{name}", f"required for {etype}")
                    continue
                if not _is(props[name], types):
                    err(f"properties.{name}",
                        f"expected {_type_name(types)}, got {_show(props[name])}")
            _check_values(etype, props, err)
    if errors:
        raise ValidationError("invalid event", errors)
    assert ts is not None and isinstance(etype, str)
    return Event(data["event_id"], etype, data["user_id"], ts, dict(props))


def _parse_ts_field(raw: Any, err: Callable[[str, str], None], window: TimeWindow | None,
                    now: datetime | None, sent: datetime | None) -> datetime | None:
    if raw is None:
        err("ts", "required")
        return None
    if not isinstance(raw, str):
        err("ts", "expected an ISO 8601 timestamp string")
        return None
    try:
        ts = parse_ts(raw)
    except ValueError:
        err("ts", f"expected an ISO 8601 timestamp with timezone, got {raw[:80]!r}")
        return None
    if not EARLIEST <= ts < LATEST:
        err("ts", f"outside the years {EARLIEST.year}-{LATEST.year - 1} (UTC)")
        return None
    if window is not None:
        problem = window.problem(ts, now or datetime.now(UTC), sent)
        if problem is not None:
            err("ts", problem)
            return None
    return ts


def _key_name(key: Any) -> str:
    return key[:80] if isinstance(key, str) and not _BAD_CHAR.search(key) else repr(key)[:80]


def _check_json(value: Any, where: str, depth: int, err: Callable[[str, str], None]) -> None:
    """JSON values only, within the bounds of the module docstring (stops at the first
    problem of a branch: one error per bad value, never a recursion past MAX_DEPTH)."""
    if isinstance(value, str):
        if _BAD_CHAR.search(value):
            err(where, "a NUL character or a lone surrogate is not allowed")
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int):
        if abs(value) > MAX_NUMBER:
            err(where, f"out of range (at most ±{MAX_NUMBER})")
    elif isinstance(value, float):
        if not math.isfinite(value) or abs(value) > MAX_NUMBER:
            err(where, f"out of range (a finite number, at most ±{MAX_NUMBER})")
    elif isinstance(value, dict | list):
        if depth > MAX_DEPTH:
            err(where, f"nested deeper than {MAX_DEPTH} levels")
            return
        if isinstance(value, list):
            for i, item in enumerate(value):
                _check_json(item, f"{where}[{i}]", depth + 1, err)
            return
        for key, item in value.items():
            if not isinstance(key, str) or _BAD_CHAR.search(key):
                err(where, f"key {_key_name(key)}: a NUL character or a lone surrogate is not "
                    "allowed" if isinstance(key, str) else f"key {key!r} is not a string")
                continue
            _check_json(item, f"{where}.{key[:80]}", depth + 1, err)
    else:
        err(where, f"not a JSON value ({type(value).__name__})")


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
