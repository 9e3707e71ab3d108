"""The admin's words for marketers: money, rule status, strategies; the secret warning."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from admin.wording import money, rule_status, slot_label, strategy_label

NOW = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
SUMMER = {"from": "2026-06-01T00:00:00+00:00", "until": "2026-09-01T00:00:00+00:00"}


def test_money_in_the_shops_currency() -> None:
    assert money(5) == "$5.00"
    assert money(1234.5, "EUR") == "€1,234.50"
    assert money(500, "JPY") == "¥500"
    assert money(5, "SEK") == "SEK 5.00"
    assert money(5, "XYZ") == "5.00 XYZ"
    assert money("n/a") == "n/a"


@pytest.mark.parametrize(("rule", "kind", "text"), [
    ({}, "on", "On, always"),
    ({"enabled": False, "active": SUMMER}, "off", "Off (disabled)"),
    ({"active": SUMMER}, "on", "On until Sep 1, 2026"),
    ({"active": {"from": "2026-08-01T09:30:00+00:00"}}, "scheduled",
     "Starts Aug 1, 2026 09:30 UTC"),
    ({"active": {"from": "2026-08-01T00:00:00Z", "until": "2026-08-31T00:00:00Z"}},
     "scheduled", "Starts Aug 1, 2026, ends Aug 31, 2026"),
    ({"active": {"until": "2026-06-30T00:00:00+00:00"}}, "ended", "Ended Jun 30, 2026"),
])
def test_rule_status_reads_enabled_and_the_window(rule: dict[str, Any], kind: str,
                                                  text: str) -> None:
    status = rule_status(rule, NOW)
    assert (status.kind, status.text) == (kind, text)


def test_strategies_and_slots_in_words() -> None:
    assert strategy_label("covisit") == "Viewed together with this one"
    assert strategy_label("new_thing") == "new thing"  # added later: still readable
    assert slot_label("product_page") == "Product page"
    assert slot_label("sidebar_top") == "Sidebar top"
