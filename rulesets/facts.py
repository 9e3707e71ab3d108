"""The fact: one flat dict per event that every rule reads, and the one table of its keys.

A condition names a field path (``state.cart_value``); durable_rules matches top-level
names, so each path becomes a short key with the prefix of its source (``s_cart_value``).
``build_fact`` lays out the event, the user's state, the customer's attributes and the
model scores under those keys; ``fact_key`` maps a path to its key; ``readable`` maps a
fact back to paths (try-it shows it). The compiler, the explainer and the engine's host
all read the prefixes from ``PREFIXES`` here.
"""

from __future__ import annotations

from typing import Any

from decisions.core.events import Event

PREFIXES = {"event": "e_", "state": "s_", "customer": "c_", "user": "u_", "score": "sc_",
            "time": "t_"}
_SOURCES = tuple((short, source + ".") for source, short in PREFIXES.items())


def fact_key(path: str) -> str:
    """``state.cart_value`` -> ``s_cart_value`` (durable_rules matches top-level names)."""
    source, _, name = path.partition(".")
    return PREFIXES[source] + name


def readable(fact: dict[str, Any]) -> dict[str, Any]:
    """A fact by field path (``s_cart_value`` -> ``state.cart_value``), sorted."""
    out: dict[str, Any] = {}
    for key, value in fact.items():
        for short, long in _SOURCES:
            if key.startswith(short):
                out[long + key[len(short):]] = value
                break
    return dict(sorted(out.items()))


class _Keys(dict[str, str]):
    """Fact keys by name, made once: ``"s_" + name`` allocates and hashes a new string
    for each of ~50 state features per event; a lookup reuses the hashed one. Bounded
    (page names, hence ``since_page_<page>``, are open-ended)."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def __missing__(self, name: str) -> str:
        key = self.prefix + name
        if len(self) < 10_000:
            self[name] = key
        return key


_EVENT_KEYS, _STATE_KEYS = _Keys(PREFIXES["event"]), _Keys(PREFIXES["state"])
# tuples, not ``str | int``: a union written in a loop is built anew on every pass
_SCALAR, NESTED = (str, int, float, bool), (list, dict)
_CUSTOMER_KEYS, _SCORE_KEYS = _Keys(PREFIXES["customer"]), _Keys(PREFIXES["score"])


def build_fact(
    event: Event,
    snapshot: dict[str, Any],
    customer: dict[str, Any] | None = None,
    scores: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Flatten event, state, customer attributes and scores into one fact."""
    event_key = _EVENT_KEYS.__getitem__
    fact: dict[str, Any] = {event_key(name): value for name, value in event.properties.items()
                            if isinstance(value, _SCALAR)}
    fact["e_type"] = event.type
    fact["ts_ms"] = event.ts_ms
    fact.update(zip(map(_STATE_KEYS.__getitem__, snapshot), snapshot.values(), strict=True))
    segments = set(snapshot.get("segments") or ())
    for name, value in (customer or {}).items():
        if name == "segments":
            segments.update(value or ())
        elif name == "attributes" and isinstance(value, dict):
            for k, v in value.items():
                if v is not None:
                    fact.setdefault(_CUSTOMER_KEYS[k], v)
        elif value is not None:
            fact[_CUSTOMER_KEYS[name]] = value
    fact["u_segments"] = sorted(segments)
    if scores:
        fact.update(zip(map(_SCORE_KEYS.__getitem__, scores), scores.values(), strict=True))
    ts = event.ts
    fact["t_hour"] = ts.hour
    fact["t_weekday"] = ts.weekday()
    return fact
