"""The one feature code path: a user-state snapshot (plus customer attributes) to a vector.

The worker's snapshot (``decisions.runtime.state``: computed by the Lua script as of the event's
own time) is the only input, at serving time and when training replays the archive
through the same script, so the two cannot drift apart.

Every feature is a number with a fixed transform, chosen so one vector suits both linear
models and trees:

* counts, amounts and durations: ``log1p(max(x, 0))``;
* "seconds/days since" values, which are ``-1`` for "never": a recency
  ``scale / (scale + x)`` in (0, 1], and 0 for never (never is infinitely long ago);
* a few ratios and indicators.

A missing key takes its default (the snapshot contract says missing means default), and a
value that is not a number counts as missing: a bad snapshot gives a vector, not an error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from math import isfinite, log1p
from typing import Any

import numpy as np

EVENT_TYPES = (
    "page_view", "product_view", "click", "add_to_cart", "remove_from_cart", "purchase", "search",
)
WINDOWS = ("5m", "1h", "24h", "30d")
MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0

Snapshot = Mapping[str, Any]
Feature = Callable[[Snapshot, Mapping[str, Any]], float]


def _num(snapshot: Snapshot, key: str, default: float = 0.0) -> float:
    value = snapshot.get(key, default)
    kind = type(value)
    if kind is float:  # the common cases first: this runs ~60 times per scored event
        return value if isfinite(value) else default
    if kind is int or kind is bool:
        return float(value)
    if isinstance(value, int | float) and isfinite(value):  # numpy scalars, subclasses
        return float(value)
    return default


def _log(key: str) -> Feature:
    def f(s: Snapshot, c: Mapping[str, Any]) -> float:
        value = s.get(key, 0)
        if type(value) is int:
            return log1p(value) if value > 0 else 0.0
        x = _num(s, key)
        return log1p(x) if x > 0 else 0.0

    return f


def _recency(key: str, scale: float) -> Feature:
    def f(s: Snapshot, c: Mapping[str, Any]) -> float:
        x = _num(s, key, -1.0)
        return 0.0 if x < 0 else scale / (scale + x)

    return f


def _length(key: str) -> Feature:
    def f(s: Snapshot, c: Mapping[str, Any]) -> float:
        value = s.get(key)
        return float(len(value)) if isinstance(value, list | tuple) else 0.0

    return f


def _ratio(num: str, den: str) -> Feature:
    def f(s: Snapshot, c: Mapping[str, Any]) -> float:
        d = _num(s, den)
        return _num(s, num) / d if d > 0 else 0.0

    return f


def _positive(key: str) -> Feature:
    def f(s: Snapshot, c: Mapping[str, Any]) -> float:
        return 1.0 if _num(s, key) > 0 else 0.0

    return f


def _avg_order_value(s: Snapshot, c: Mapping[str, Any]) -> float:
    orders = _num(s, "order_count")
    return log1p(max(_num(s, "lifetime_value"), 0.0) / orders) if orders > 0 else 0.0


def _customer_known(s: Snapshot, c: Mapping[str, Any]) -> float:
    return 1.0 if c else 0.0


def _build() -> dict[str, Feature]:
    table: dict[str, Feature] = {}
    for key in (
        "session_events", "session_page_views", "session_product_views", "session_seconds",
        "product_view_seconds", "cart_value", "cart_items", "cart_lines", "order_count",
        "lifetime_value", "distinct_categories_30d", "days_since_first_seen",
    ):
        table[f"log_{key}"] = _log(key)
    for etype in EVENT_TYPES:
        for window in WINDOWS:
            key = f"count_{etype}_{window}"
            table[f"log_{key}"] = _log(key)
    for etype in EVENT_TYPES:
        table[f"recency_{etype}"] = _recency(f"since_{etype}", MINUTE)
    for page in ("home", "category", "product", "cart", "checkout", "search"):
        table[f"recency_page_{page}"] = _recency(f"since_page_{page}", MINUTE)
    table["recency_same_product_view"] = _recency("since_same_product_view", MINUTE)
    table["recency_last_purchase"] = _recency("days_since_last_purchase", 30.0)
    table["has_cart"] = _positive("cart_value")
    table["has_ordered"] = _positive("order_count")
    table["product_view_share"] = _ratio("session_product_views", "session_events")
    table["avg_order_value"] = _avg_order_value
    table["recent_products"] = _length("recent_products")
    table["recent_categories"] = _length("recent_categories")
    table["customer_known"] = _customer_known
    return table


FEATURES: dict[str, Feature] = _build()
ALL_FEATURES: tuple[str, ...] = tuple(FEATURES)

_SESSION_WINDOWS = ("5m", "1h", "24h")
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    # how likely this visitor is to buy in this session: the session, cart and recent intent
    "purchase_intent": (
        "log_session_events", "log_session_page_views", "log_session_product_views",
        "log_session_seconds", "log_product_view_seconds", "product_view_share",
        "log_cart_value", "log_cart_items", "log_cart_lines", "has_cart",
        *(f"log_count_{t}_{w}" for t in EVENT_TYPES if t != "purchase" for w in _SESSION_WINDOWS),
        "log_count_purchase_30d",
        *(f"recency_{t}" for t in EVENT_TYPES),
        "recency_page_cart", "recency_page_checkout", "recency_page_product",
        "recency_same_product_view",
        "log_order_count", "log_lifetime_value", "recency_last_purchase",
        "log_days_since_first_seen", "log_distinct_categories_30d", "recent_products",
        "customer_known",
    ),
    # how likely this customer is to lapse: frequency, recency, value and engagement trend
    "churn_risk": (
        "log_order_count", "log_lifetime_value", "avg_order_value", "recency_last_purchase",
        "has_ordered", "log_days_since_first_seen",
        *(f"log_count_{t}_{w}" for t in EVENT_TYPES for w in ("24h", "30d")),
        "log_distinct_categories_30d", "recent_categories", "recent_products",
        "log_cart_value", "log_session_events", "recency_page_cart", "customer_known",
    ),
}
MODEL_NAMES: tuple[str, ...] = tuple(FEATURE_SETS)

# Features that keep growing with the history replayed (the Lua state keeps them for the
# user's lifetime, not in a 30-day window): a replay sees only part of the lifetime.
LIFETIME_FEATURES = frozenset({
    "log_days_since_first_seen", "log_order_count", "log_lifetime_value", "avg_order_value",
    "has_ordered", "recency_last_purchase",
})


def feature_code_version() -> str:
    """A short hash of the feature definitions, stored with every model version."""
    spec = repr(sorted((name, FEATURES[name].__qualname__) for name in FEATURES))
    spec += repr(FEATURE_SETS)
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


class Extractor:
    """Computes a fixed list of features, in order, as a float64 vector."""

    def __init__(self, names: Sequence[str]) -> None:
        unknown = [n for n in names if n not in FEATURES]
        if unknown:
            raise KeyError(f"unknown features: {', '.join(unknown)}")
        self.names = tuple(names)
        self._fns = [FEATURES[n] for n in self.names]

    def values(self, snapshot: Snapshot, customer: Mapping[str, Any] | None = None) -> list[float]:
        c = customer or {}
        return [fn(snapshot, c) for fn in self._fns]

    def vector(self, snapshot: Snapshot, customer: Mapping[str, Any] | None = None) -> np.ndarray:
        return np.array(self.values(snapshot, customer), dtype=np.float64)

    def matrix(
        self, rows: Sequence[tuple[Snapshot, Mapping[str, Any] | None]]
    ) -> np.ndarray:
        out = np.empty((len(rows), len(self.names)), dtype=np.float64)
        for i, (snapshot, customer) in enumerate(rows):
            out[i] = self.values(snapshot, customer)
        return out


def vector(
    model: str, snapshot: Snapshot, customer: Mapping[str, Any] | None = None
) -> np.ndarray:
    """The input vector of ``model`` (one of :data:`MODEL_NAMES`) for one snapshot."""
    return Extractor(FEATURE_SETS[model]).vector(snapshot, customer)
