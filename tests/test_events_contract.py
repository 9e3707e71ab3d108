"""The event contract, searched: generated valid events are accepted and round-trip;
generated junk is refused with field errors, never another exception (#17)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decisions.core.errors import ValidationError
from decisions.core.events import (
    MAX_DEPTH,
    MAX_NUMBER,
    PROPERTIES,
    TimeWindow,
    format_ts,
    parse_event,
)

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
WINDOW = TimeWindow.of(48 * 3600, 300)
BOUNDED = settings(max_examples=200, deadline=None, database=None,
                   suppress_health_check=[HealthCheck.too_slow])

ids = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")),
              min_size=1, max_size=40).filter(lambda s: s == s.strip())
numbers = st.one_of(st.integers(0, MAX_NUMBER),
                    st.floats(0, MAX_NUMBER, allow_nan=False, allow_infinity=False))
text = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
               max_size=30)
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-MAX_NUMBER, MAX_NUMBER),
                      st.floats(-1e12, 1e12, allow_nan=False), text)
json_values = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(text, inner, max_size=3), max_leaves=10)
VALUES = {str: text, int: st.integers(1, MAX_NUMBER), float: numbers, list: st.just([]),
          bool: st.booleans()}


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    etype = draw(st.sampled_from(sorted(PROPERTIES)))
    props: dict[str, Any] = draw(st.dictionaries(text.filter(lambda k: k not in PROPERTIES[etype]),
                                                 json_values, max_size=3))
    for name, (types, required) in PROPERTIES[etype].items():
        if required or draw(st.booleans()):
            props[name] = draw(numbers if float in types else VALUES[types[0]])
    age = draw(st.integers(-299, 48 * 3600 - 1))
    return {"event_id": draw(ids), "type": etype, "user_id": draw(ids),
            "ts": format_ts(NOW - timedelta(seconds=age)), "properties": props}


@BOUNDED
@given(valid_events())
def test_valid_events_are_accepted_and_round_trip(data: dict[str, Any]) -> None:
    event = parse_event(data, window=WINDOW, now=NOW)
    wire = orjson.loads(orjson.dumps(event.to_dict()))  # what goes to Kafka and back
    again = parse_event(wire, window=WINDOW, now=NOW)
    assert again == event and again.to_dict() == event.to_dict()


def junk_of(valid: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    out = dict(valid)
    if field == "properties.x":
        out["properties"] = {**valid["properties"], "x": value}
    elif field == "drop":
        out.pop(str(value), None)
    else:
        out[field] = value
    return out


anything = st.one_of(json_values, st.text(), st.floats(), st.integers(),
                     st.binary(max_size=4), st.sets(st.integers(), max_size=2))


@BOUNDED
@given(valid_events(),
       st.sampled_from(["event_id", "user_id", "type", "ts", "properties", "properties.x",
                        "drop", "extra"]),
       anything)
def test_junk_is_refused_with_field_errors_only(valid: dict[str, Any], field: str,
                                                value: Any) -> None:
    data = junk_of(valid, field, value)
    try:
        event = parse_event(data, window=WINDOW, now=NOW)
    except ValidationError as exc:
        assert exc.details and all(d.field for d in exc.details), exc.details
        return
    orjson.dumps(event.to_dict())  # accepted: then it can be encoded, whatever it holds


@BOUNDED
@given(anything)
def test_anything_at_all_is_an_event_or_a_validation_error(data: Any) -> None:
    try:
        parse_event(data, window=WINDOW, now=NOW)
    except ValidationError as exc:
        assert exc.details


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def base(**changes: Any) -> dict[str, Any]:
    data = {"event_id": "e-1", "type": "add_to_cart", "user_id": "u-1",
            "ts": format_ts(NOW - timedelta(minutes=1)),
            "properties": {"product_id": "p-1", "price": 10.0, "quantity": 1}}
    props = changes.pop("properties", {})
    return {**data, **changes, "properties": {**data["properties"], **props}}


# The cases of issue #17, points 1, 2 and 6: each is refused, naming its field.
CASES = {
    "year 10000 in UTC terms": (base(ts="9999-12-31T23:59:59Z"), "ts"),
    "year 1 with +01:00": (base(ts="0001-01-01T00:00:00+01:00"), "ts"),
    "year 9999 with -01:00": (base(ts="9999-12-31T23:30:00-01:00"), "ts"),
    "far future": (base(ts=format_ts(NOW + timedelta(days=30))), "ts"),
    "long past": (base(ts=format_ts(NOW - timedelta(days=30))), "ts"),
    "NUL in user_id": (base(user_id="u\x00-1"), "user_id"),
    "NUL in event_id": (base(event_id="e\x00"), "event_id"),
    "NUL in a property": (base(properties={"category": "sh\x00oes"}), "properties.category"),
    "NUL in a property key": (base(properties={"a\x00": 1}), "properties"),
    "price 1e308": (base(properties={"price": 1e308, "quantity": 10}), "properties.price"),
    "infinite price": (base(properties={"price": float("inf")}), "properties.price"),
    "NaN total": ({**base(type="purchase"), "properties": {
        "order_id": "o", "total": float("nan"), "items": []}}, "properties.total"),
    "quantity 2**64": (base(properties={"quantity": 2**64}), "properties.quantity"),
    "type {}": (base(type={}), "type"),
    "type []": (base(type=[]), "type"),
    "nested 300 deep": (base(properties={"deep": nested(300)}), "properties.deep"),
    f"nested {MAX_DEPTH} deep": (base(properties={"deep": nested(MAX_DEPTH)}), "properties.deep"),
    "user_id of U+0085 only": (base(user_id="\x85\x85"), "user_id"),
    "user_id with a control character": (base(user_id="u\x85-1"), "user_id"),
    "user_id with white space at the end": (base(user_id="u-1 "), "user_id"),
    "timer from outside": (base(type="timer", properties={"timer": "idle_30m"}), "type"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_case_of_the_issue_is_refused_naming_its_field(name: str) -> None:
    data, field = CASES[name]
    with pytest.raises(ValidationError) as caught:
        parse_event(data, window=WINDOW, now=NOW)
    assert any(d.field.startswith(field) for d in caught.value.details), caught.value.details


def test_the_window_is_measured_from_the_send_time_when_known() -> None:
    old = base(ts=format_ts(NOW - timedelta(days=3)))
    with pytest.raises(ValidationError):
        parse_event(old, window=WINDOW, now=NOW)
    sent = NOW - timedelta(days=2, hours=23)  # waited in the topic while workers were down
    assert parse_event(old, window=WINDOW, now=NOW, sent=sent).user_id == "u-1"


def test_without_a_window_old_events_parse_as_simulations_need() -> None:
    assert parse_event(base(ts="2001-01-01T00:00:00Z")).ts.year == 2001
    with pytest.raises(ValidationError):
        parse_event(base(ts="9999-12-31T23:59:59Z"))  # still within 1970-2999
