"""The uplift of a holdout experiment: what a rule (or a ruleset) earns over what it gives.

Eligible shoppers are those a rule of the experiment fired for in the period (by event
time), each counted once, from their first decision, in the group it recorded
(``payload.experiments``, ``decisions.runtime.decide``): *treatment* (shown the offer) or
*control* (held out, shown nothing, recorded all the same). Per group, from the event
archive: conversion = shoppers with a purchase within the attribution window after their
first decision; revenue per shopper = the purchases' ``total`` in that window, over every
eligible shopper. Discount given = the offers of the experiment the treatment group
redeemed (``offer_feedback``; amount, or percent of the order value reported). Incremental
revenue net of discount = (treatment revenue - its discount) - control revenue, per
shopper and times the treatment group's size.

Intervals are 95 %: the conversion difference by Newcombe's method
(``statsmodels.stats.proportion``), the revenue differences by Welch's t
(``scipy.stats.ttest_ind``). The verdict reads the conversion interval.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, text

from rulesets.holdout import CONTROL, TREATMENT

MIN_GROUP = 30  # shoppers per group before anything is concluded
MIN_CONVERSIONS = 10  # purchases over both groups

_GROUPS = (
    "SELECT DISTINCT ON (user_id) user_id, event_ts AS at,"
    " payload -> 'experiments' ->> :exp AS grp FROM decisions"
    " WHERE ruleset = :rs {rule} AND payload -> 'experiments' ->> :exp IS NOT NULL"
    " AND event_ts >= :a AND event_ts < :b ORDER BY user_id, event_ts")
_OUTCOMES = (
    "WITH first AS (" + _GROUPS + ")"
    " SELECT f.user_id, f.grp, p.n, p.revenue FROM first f LEFT JOIN LATERAL ("
    " SELECT count(*) AS n, coalesce(sum((e.properties ->> 'total')::float), 0) AS revenue"
    " FROM events e WHERE e.user_id = f.user_id AND e.type = 'purchase'"
    " AND e.ts > f.at AND e.ts <= f.at + make_interval(secs => :w)) p ON true")
_DISCOUNTS = (
    "SELECT f.user_id, d.payload -> 'discount', f.amount FROM offer_feedback f"
    " JOIN decisions d ON d.action_id = f.offer_id WHERE d.ruleset = :rs {rule}"
    " AND f.kind = 'redeem' AND d.payload -> 'experiments' ->> :exp = 'treatment'"
    " AND d.event_ts >= :a AND d.event_ts < :b")


@dataclass
class Interval:
    estimate: float | None
    low: float | None
    high: float | None


@dataclass
class Uplift:
    ruleset: str
    rule: str | None  # None: the ruleset's experiment
    experiment: str
    start: datetime
    end: datetime
    window_days: float
    shoppers: dict[str, int] = field(default_factory=dict)  # group -> eligible shoppers
    conversion: dict[str, float | None] = field(default_factory=dict)  # group -> rate
    revenue_per_shopper: dict[str, float | None] = field(default_factory=dict)
    discount_given: float = 0.0  # treatment group, in total
    conversion_uplift: Interval = field(default_factory=lambda: Interval(None, None, None))
    revenue_uplift: Interval = field(default_factory=lambda: Interval(None, None, None))
    net_uplift_per_shopper: Interval = field(default_factory=lambda: Interval(None, None, None))
    incremental_net_revenue: Interval = field(default_factory=lambda: Interval(None, None, None))
    p_value: float | None = None
    verdict: str = "not enough data yet"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["start"], out["end"] = self.start.isoformat(), self.end.isoformat()
        return out


def experiment_of(document: dict[str, Any], rule: str | None) -> str:
    """The experiment a ruleset (or one of its rules) currently runs."""
    if rule is None:
        return str((document.get("holdout") or {}).get("experiment") or document["name"])
    for r in document.get("rules", []):
        if r["name"] == rule:
            return str((r.get("holdout") or {}).get("experiment")
                       or f"{document['name']}/{rule}")
    return f"{document['name']}/{rule}"


def uplift(db: Engine, ruleset: str, experiment: str, start: datetime, end: datetime, *,
           rule: str | None = None, window_days: float = 7.0) -> Uplift:
    params: dict[str, Any] = {"rs": ruleset, "exp": experiment, "a": start, "b": end,
                              "w": window_days * 86400.0}
    where_rule = ""
    if rule is not None:
        where_rule, params["rule"] = "AND rule = :rule", rule
    rows: dict[str, list[tuple[str, int, float]]] = {CONTROL: [], TREATMENT: []}
    discount: dict[str, float] = {}
    with db.connect() as conn:
        for user_id, grp, n, revenue in conn.execute(
                text(_OUTCOMES.replace("{rule}", where_rule)), params):
            if grp in rows:
                rows[grp].append((user_id, int(n or 0), float(revenue or 0)))
        late = {**params, "b": end + timedelta(days=window_days)}
        for user_id, terms, amount in conn.execute(
                text(_DISCOUNTS.replace("{rule}", where_rule.replace("rule", "d.rule", 1))),
                late):
            discount[user_id] = discount.get(user_id, 0.0) + _granted(terms, amount)
    report = Uplift(ruleset, rule, experiment, start, end, window_days)
    treated = {u for u, _, _ in rows[TREATMENT]}
    report.discount_given = sum(v for u, v in discount.items() if u in treated)
    _statistics(report, rows, discount)
    return report


def _statistics(report: Uplift, rows: dict[str, list[tuple[str, int, float]]],
                discount: dict[str, float]) -> None:
    from scipy import stats
    from statsmodels.stats.proportion import (
        confint_proportions_2indep,
        test_proportions_2indep,
    )

    converted = {g: sum(1 for _, n, _ in rows[g] if n) for g in rows}
    revenue = {g: [r for _, _, r in rows[g]] for g in rows}
    net_t = [r - discount.get(u, 0.0) for u, _, r in rows[TREATMENT]]
    for g in rows:
        n = len(rows[g])
        report.shoppers[g] = n
        report.conversion[g] = converted[g] / n if n else None
        report.revenue_per_shopper[g] = sum(revenue[g]) / n if n else None
    n_t, n_c = report.shoppers[TREATMENT], report.shoppers[CONTROL]
    if n_t < 2 or n_c < 2:
        return
    diff = converted[TREATMENT] / n_t - converted[CONTROL] / n_c
    low, high = confint_proportions_2indep(converted[TREATMENT], n_t, converted[CONTROL], n_c,
                                           compare="diff", method="newcombe")
    report.conversion_uplift = Interval(diff, float(low), float(high))
    if converted[TREATMENT] + converted[CONTROL]:
        report.p_value = float(test_proportions_2indep(
            converted[TREATMENT], n_t, converted[CONTROL], n_c, compare="diff").pvalue)
    report.revenue_uplift = _welch(stats, revenue[TREATMENT], revenue[CONTROL])
    net = _welch(stats, net_t, revenue[CONTROL])
    report.net_uplift_per_shopper = net
    report.incremental_net_revenue = Interval(*(None if v is None else v * n_t
                                                for v in (net.estimate, net.low, net.high)))
    if min(n_t, n_c) < MIN_GROUP or sum(converted.values()) < MIN_CONVERSIONS:
        report.verdict = "not enough data yet"
    elif low > 0:
        report.verdict = "uplift significant at 95 %"
    elif high < 0:
        report.verdict = "fewer purchases than without it, significant at 95 %"
    else:
        report.verdict = "no measurable effect"


def _welch(stats: Any, a: list[float], b: list[float]) -> Interval:
    estimate = sum(a) / len(a) - sum(b) / len(b)
    if len(set(a)) < 2 and len(set(b)) < 2:  # no spread: no interval to speak of
        return Interval(estimate, None, None)
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    low, high = float(ci.low), float(ci.high)
    return Interval(estimate, low if math.isfinite(low) else None,
                    high if math.isfinite(high) else None)


def _granted(terms: Any, order_value: float | None) -> float:
    if not isinstance(terms, dict):
        return 0.0
    value = float(terms.get("value") or 0)
    if terms.get("type") == "amount":
        return value
    return value * float(order_value or 0) / 100.0


def table(report: Uplift) -> str:
    """The report as plain text (``decisions report uplift``)."""
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.1%}"

    def money(v: float | None) -> str:
        return "-" if v is None else f"{v:,.2f}"

    def ci(i: Interval, fmt: Any) -> str:
        if i.estimate is None:
            return "-"
        if i.low is None or i.high is None:
            return fmt(i.estimate)
        return f"{fmt(i.estimate)} (95 % CI {fmt(i.low)} to {fmt(i.high)})"

    what = f"rule {report.rule}" if report.rule else "ruleset"
    lines = [
        f"uplift of {report.ruleset} {what}, experiment {report.experiment}",
        f"period {report.start:%Y-%m-%d %H:%M} to {report.end:%Y-%m-%d %H:%M} (event time),"
        f" attribution window {report.window_days:g} days",
        "",
        f"{'':28}{'treatment':>14}{'control':>14}",
        f"{'eligible shoppers':28}{report.shoppers.get(TREATMENT, 0):>14}"
        f"{report.shoppers.get(CONTROL, 0):>14}",
        f"{'conversion':28}{pct(report.conversion.get(TREATMENT)):>14}"
        f"{pct(report.conversion.get(CONTROL)):>14}",
        f"{'revenue per shopper':28}{money(report.revenue_per_shopper.get(TREATMENT)):>14}"
        f"{money(report.revenue_per_shopper.get(CONTROL)):>14}",
        f"{'discount given':28}{money(report.discount_given):>14}{'-':>14}",
        "",
        f"conversion uplift           {ci(report.conversion_uplift, pct)}",
        f"revenue uplift per shopper  {ci(report.revenue_uplift, money)}",
        f"net of discount per shopper {ci(report.net_uplift_per_shopper, money)}",
        f"incremental net revenue     {ci(report.incremental_net_revenue, money)}",
        "",
        f"verdict: {report.verdict}",
    ]
    return "\n".join(lines)
