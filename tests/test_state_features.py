"""The state script computes only the windowed features asked for, and the same values."""

from __future__ import annotations

from datetime import timedelta

import redis

from decisions.core.events import parse_event
from decisions.runtime.state import StateStore, wanted_features
from tests.helpers import event, now

PATHS = ["state.cart_value", "state.count_add_to_cart_1h", "state.since_page_checkout",
         "state.since_purchase", "event.type", "score.purchase_intent"]


def _events(user: str) -> list:
    t0 = now() - timedelta(minutes=30)
    raw = [
        event("page_view", user, t0, f"{user}-1", page="checkout"),
        event("product_view", user, t0 + timedelta(minutes=1), f"{user}-2", product_id="p-1",
              category="shoes", price=90.0),
        event("add_to_cart", user, t0 + timedelta(minutes=2), f"{user}-3", product_id="p-1",
              price=90.0, quantity=3, category="shoes"),
    ]
    return [parse_event(e) for e in raw]


def test_spec_names_only_windowed_state_features() -> None:
    assert wanted_features(PATHS) == "c:add_to_cart:1h,p:checkout,s:purchase"
    assert wanted_features(["state.cart_value"]) == "none:-"  # never "" (= everything)


def test_narrow_snapshot_matches_the_full_one(redis_client: redis.Redis) -> None:
    store = StateStore(redis_client)
    full = store.apply_batch(_events("u-full"))[-1].snapshot
    store.wanted = wanted_features(PATHS)
    narrow = store.apply_batch(_events("u-narrow"))[-1].snapshot
    assert "count_page_view_5m" in full and "count_page_view_5m" not in narrow
    assert "since_click" in full and "since_click" not in narrow
    for key, value in narrow.items():
        if key == "days_since_first_seen":
            continue
        assert full[key] == value, key
    assert narrow["count_add_to_cart_1h"] == 1
    assert narrow["since_page_checkout"] == 120
    assert narrow["since_purchase"] == -1
    assert narrow["cart_value"] == 270
