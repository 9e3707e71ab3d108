"""Per-rule performance over a chosen period, with a server-rendered SVG chart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from admin.charts import bar_chart, trend_chart
from admin.reports import daily, performance
from admin.services import services
from admin.views.audit import parse_day
from admin.views.common import Form, page
from admin.views.render import render
from admin.views.rulesets import working


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
    return render(request, "performance.html", {
        "name": name, "rows": rows, "chart": bar_chart(rows), "start": start, "end": end,
        "trend": trend_chart(daily(services(request).db, name, a, b)),
        "totals": {
            "fires": sum(r.fires for r in rows), "offers": sum(r.offers for r in rows),
            "impressions": sum(r.impressions for r in rows),
            "redemptions": sum(r.redemptions for r in rows),
            "discount": sum(r.discount for r in rows),
        },
    })


routes = [Route("/rulesets/{name}/performance", rule_performance, name="performance")]
