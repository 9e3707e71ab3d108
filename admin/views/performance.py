"""Per-rule performance over a chosen period, with a server-rendered SVG chart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from admin.charts import bar_chart, trend_chart
from admin.reports import daily, performance
from admin.services import services
from admin.views.audit import parse_day
from admin.views.common import Form, page
from admin.views.render import render
from admin.views.rulesets import live_budgets, working
from decisions.runtime.uplift import Uplift, experiment_of, uplift


@page("viewer")
def rule_performance(request: Request, form: Form) -> Response:
    name = request.path_params["name"]
    work = working(request, name)
    today = datetime.now(UTC).date()
    start = parse_day(request.query_params.get("from", "")) or today - timedelta(days=6)
    end = parse_day(request.query_params.get("to", "")) or today
    if end < start:
        start, end = end, start
    a = datetime(start.year, start.month, start.day, tzinfo=UTC)
    b = datetime(end.year, end.month, end.day, tzinfo=UTC) + timedelta(days=1)
    rows = performance(services(request).db, name, a, b,
                       [r["name"] for r in work.document["rules"]])
    experiments = uplifts(request, work.document, a, b)
    budgets, budgets_error = live_budgets(request, name, work)
    return render(request, "performance.html", {
        "name": name, "rows": rows, "chart": bar_chart(rows), "start": start, "end": end,
        "trend": trend_chart(daily(services(request).db, name, a, b)),
        "totals": {
            "fires": sum(r.fires for r in rows), "offers": sum(r.offers for r in rows),
            "impressions": sum(r.impressions for r in rows),
            "redemptions": sum(r.redemptions for r in rows),
            "discount": sum(r.discount for r in rows),
        },
        "uplifts": experiments,
        "budgets": budgets, "budgets_error": budgets_error,
        "window_days": services(request).settings.uplift_window_days,
    })


def uplifts(request: Request, document: dict[str, Any], a: datetime, b: datetime,
            ) -> list[tuple[Uplift, dict[str, float]]]:
    """The uplift of the ruleset's experiment and of each rule's, with where the
    conversion interval's whisker sits on a -50..+50 point scale (percent of the width)."""
    svc = services(request)
    wanted: list[str | None] = []
    if document.get("holdout"):
        wanted.append(None)
    wanted += [r["name"] for r in document["rules"] if r.get("holdout")]
    out = []
    for rule in wanted:
        report = uplift(svc.db, document["name"], experiment_of(document, rule), a, b,
                        rule=rule, window_days=svc.settings.uplift_window_days)
        ci = report.conversion_uplift
        bar = {}
        if ci.low is not None and ci.high is not None and ci.estimate is not None:
            def x(v: float) -> float:
                return max(0.0, min(100.0, 50 + v * 100))
            bar = {"low": x(ci.low), "high": x(ci.high), "mid": x(ci.estimate)}
        out.append((report, bar))
    return out


routes = [Route("/rulesets/{name}/performance", rule_performance, name="performance")]
