"""Rule performance over a period: fires, impressions, redemptions, conversion, discount.

Fires and offers come from ``decisions`` (what the worker decided, by decision time);
impressions and redemptions from ``offer_feedback`` (reported by the storefront). The
discount granted is summed over redemptions: the offer's ``amount``, or its ``percent`` of
the order value the storefront reported with the redemption.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import redis
from sqlalchemy import Engine, text

from decisions.core.errors import ConfigError
from decisions.runtime.budgets import BudgetStore


@dataclass
class RulePerformance:
    rule: str
    fires: int = 0
    offers: int = 0
    impressions: int = 0
    redemptions: int = 0
    discount: float = 0.0

    @property
    def conversion(self) -> float | None:
        return self.redemptions / self.impressions if self.impressions else None


def performance(db: Engine, ruleset: str, start: datetime, end: datetime,
                rules: list[str] | None = None) -> list[RulePerformance]:
    """One row per rule (rules of the current version first, then any others that fired)."""
    out: dict[str, RulePerformance] = {r: RulePerformance(r) for r in rules or []}

    def row(rule: str) -> RulePerformance:
        return out.setdefault(rule, RulePerformance(rule))

    period = {"rs": ruleset, "a": start, "b": end}
    with db.connect() as conn:
        for rule, fires, offers in conn.execute(text(
                "SELECT rule, count(DISTINCT event_id),"
                " count(*) FILTER (WHERE kind = 'offer' AND NOT payload ? 'held_out'"
                " AND NOT payload ? 'refused') "
                "FROM decisions WHERE ruleset = :rs AND decided_at >= :a AND decided_at < :b "
                "GROUP BY rule"), period):
            row(rule).fires, row(rule).offers = int(fires), int(offers)
        for rule, kind, n in conn.execute(text(
                "SELECT rule, kind, count(*) FROM offer_feedback WHERE ruleset = :rs "
                "AND at >= :a AND at < :b AND rule IS NOT NULL GROUP BY rule, kind"), period):
            if kind == "impression":
                row(rule).impressions = int(n)
            elif kind == "redeem":
                row(rule).redemptions = int(n)
        for rule, terms, amount in conn.execute(text(
                "SELECT f.rule, d.payload -> 'discount', f.amount FROM offer_feedback f "
                "JOIN decisions d ON d.action_id = f.offer_id WHERE f.ruleset = :rs "
                "AND f.kind = 'redeem' AND f.at >= :a AND f.at < :b"), period):
            row(rule).discount += granted(terms, amount)
    return list(out.values())


@dataclass
class DailyCount:
    day: date
    fires: int = 0
    redemptions: int = 0


def daily(db: Engine, ruleset: str, start: datetime, end: datetime) -> list[DailyCount]:
    """Fires and redemptions of the whole ruleset per UTC day, every day of the period."""
    days: dict[date, DailyCount] = {}
    d = start.astimezone(UTC).date()
    while d < end.astimezone(UTC).date():
        days[d] = DailyCount(d)
        d += timedelta(days=1)
    period = {"rs": ruleset, "a": start, "b": end}
    with db.connect() as conn:
        for day, n in conn.execute(text(
                "SELECT (decided_at AT TIME ZONE 'UTC')::date, count(DISTINCT event_id) "
                "FROM decisions WHERE ruleset = :rs AND decided_at >= :a AND decided_at < :b "
                "GROUP BY 1"), period):
            days.setdefault(day, DailyCount(day)).fires = int(n)
        for day, n in conn.execute(text(
                "SELECT (at AT TIME ZONE 'UTC')::date, count(*) FROM offer_feedback "
                "WHERE ruleset = :rs AND kind = 'redeem' AND at >= :a AND at < :b "
                "GROUP BY 1"), period):
            days.setdefault(day, DailyCount(day)).redemptions = int(n)
    return [days[k] for k in sorted(days)]


def granted(terms: Any, order_value: float | None) -> float:
    if not isinstance(terms, dict):
        return 0.0
    value = float(terms.get("value") or 0)
    if terms.get("type") == "amount":
        return value
    return value * float(order_value or 0) / 100.0



def budgets_left(client: Callable[[], Any], document: dict[str, Any]) -> tuple[list[Any], str]:
    """What is left of a ruleset's budgets (``decisions.runtime.budgets.Remaining``), or
    why it cannot be told (Redis unreachable): the page shows the rest all the same.
    ``client`` gives the Redis client; it is not asked for when there is no budget."""
    if not document.get("budget") and not any(r.get("budget") for r in document["rules"]):
        return [], ""
    try:
        return BudgetStore(client()).remaining(document), ""
    except (redis.RedisError, OSError, ConfigError) as exc:
        return [], f"What is left of the budgets is unknown: Redis is unreachable ({exc})."
