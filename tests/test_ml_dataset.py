"""Labels from history, on hand-made sequences (snapshots given, no Redis needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from decisions.core.events import Event
from decisions.runtime.ml.dataset import CHURN_RISK, PURCHASE_INTENT, build_table, live_rows

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def at(minutes: float, user: str, etype: str, eid: str, **snapshot: Any) -> tuple[Event, dict]:
    return Event(eid, etype, user, T0 + timedelta(minutes=minutes), {}), snapshot


def labels(table: Any) -> dict[str, int]:
    return dict(zip(table.ids, table.y.tolist(), strict=True))


def test_purchase_later_in_the_same_session() -> None:
    history = [
        at(0, "a", "page_view", "a1"),
        at(1, "a", "add_to_cart", "a2", cart_value=10.0),
        at(2, "a", "purchase", "a3"),
        at(3, "a", "page_view", "a4"),  # after the purchase, no second one: 0
        at(0, "b", "page_view", "b1"),
        at(40, "b", "page_view", "b2"),  # new session (> 30 min): b1 ended without purchase
        at(45, "b", "purchase", "b3"),
        at(200, "c", "page_view", "c1"),  # still open when the history ends: unknown
        at(210, "d", "page_view", "d1"),
    ]
    history.sort(key=lambda pair: pair[0].ts)
    table = build_table(PURCHASE_INTENT, history, T0, T0 + timedelta(hours=5))
    assert labels(table) == {"a1": 1, "a2": 1, "a4": 0, "b1": 0, "b2": 1}
    assert table.info["dropped_unknown_outcome"] == 2
    assert table.ids is not None
    a2 = list(table.ids).index("a2")
    assert table.columns(["has_cart"])[a2, 0] == 1.0


def test_rows_outside_the_period_are_context_only() -> None:
    history = [at(0, "a", "page_view", "a1"), at(5, "a", "page_view", "a2"),
               at(6, "a", "purchase", "a3"), at(100, "z", "page_view", "z1")]
    start, end = T0 + timedelta(minutes=3), T0 + timedelta(hours=1)
    table = build_table(PURCHASE_INTENT, history, start, end)
    assert labels(table) == {"a2": 1}  # a1 is before the period, but its purchase still counts


def test_churn_labels_per_customer_day() -> None:
    day = 24 * 60
    history = [
        at(0 * day, "a", "purchase", "p0", order_count=1),
        at(1 * day, "a", "page_view", "d1a", order_count=1),
        at(1 * day + 60, "a", "page_view", "d1b", order_count=1),  # the day's last event
        at(8 * day, "a", "page_view", "d8", order_count=1),
        at(10 * day, "a", "purchase", "p10", order_count=2),
        at(12 * day, "a", "page_view", "d12", order_count=2),
        at(2 * day, "n", "page_view", "never", order_count=0),  # not a customer yet: no row
        at(14 * day, "z", "page_view", "end"),
    ]
    history.sort(key=lambda pair: pair[0].ts)
    table = build_table(CHURN_RISK, history, T0, T0 + timedelta(days=14), churn_days=5)
    # days 0 and 1: the next purchase is on day 10 (> 5 days later): lapsed; day 8: bought
    # on day 10; days 10 and 12: the 5 days are not over when the history ends (day 14)
    assert labels(table) == {"p0": 1, "d1b": 1, "d8": 0}
    assert table.info["dropped_unknown_outcome"] == 2


def test_live_rows_select_like_training() -> None:
    history = [at(0, "a", "page_view", "a1"), at(1, "a", "purchase", "a2", order_count=1),
               at(2, "a", "page_view", "a3", order_count=1)]
    end = T0 + timedelta(hours=1)
    assert live_rows(PURCHASE_INTENT, history, T0, end).shape[0] == 2
    assert live_rows(CHURN_RISK, history, T0, end).shape[0] == 1
