"""Backtest pages: choose a period, watch progress (polled), cancel, read the results."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from admin.services import services
from admin.templating import flash, redirect
from admin.views.audit import parse_day
from admin.views.common import Form, field, page
from admin.views.render import render
from admin.views.rulesets import working
from decisions.core.errors import NotFound
from decisions.runtime.archive import EventArchive
from decisions.simulate.backtest import Backtest, Runner
from rulesets.validate import validate

MAX_RUNNING = 2  # backtests running at once in one admin process


@page("viewer")
def backtest_form(request: Request, form: Form) -> Response:
    name = request.path_params["name"]
    svc = services(request)
    work = working(request, name)
    bounds = EventArchive(svc.db).bounds()
    today = datetime.now(UTC).date()
    return render(request, "backtest.html", {
        "name": name, "work": work, "bounds": bounds,
        "start": (bounds[0].date() if bounds else today - timedelta(days=7)).isoformat(),
        "end": (bounds[1].date() if bounds else today).isoformat(),
        "runs": svc.backtests.of_ruleset(name), "errors": {},
    })


@page("editor")
def backtest_start(request: Request, form: Form) -> Response:
    name = request.path_params["name"]
    svc = services(request)
    user = request.scope["admin_user"]
    work = working(request, name)
    start, end = parse_day(field(form, "from")), parse_day(field(form, "to"))
    if start is None or end is None or end < start:
        flash(request, "Choose a period: a first and a last day (the last not before the "
                       "first).", "error")
        return redirect(request, "backtest", name=name)
    if svc.backtests.running() >= MAX_RUNNING:
        flash(request, f"{MAX_RUNNING} backtests are running already: wait for one to end "
                       "(or cancel one) and start again.", "error")
        return redirect(request, "backtest", name=name)
    a = datetime(start.year, start.month, start.day, tzinfo=UTC)
    b = datetime(end.year, end.month, end.day, tzinfo=UTC) + timedelta(days=1)
    source = f"draft revision {work.revision}" if work.draft else \
        f"version {work.active_version}"
    run = Backtest(name, source, a, b, user.username)
    runner = Runner(svc.db, svc.redis, svc.rule_engine, svc.engine_lock,
                    validate(work.document))
    svc.backtests.start(run, runner)
    return redirect(request, "backtest_run", name=name, run_id=run.id)


def _run(request: Request) -> Backtest:
    run = services(request).backtests.get(request.path_params["run_id"])
    if run is None or run.ruleset != request.path_params["name"]:
        raise NotFound("no such backtest (backtests are kept in memory until a restart)")
    return run


@page("viewer")
def backtest_run(request: Request, form: Form) -> Response:
    run = _run(request)
    rows = sorted(run.tallies.values(), key=lambda t: -t.offers)
    return render(request, "backtest_run.html", {
        "name": run.ruleset, "run": run, "rows": rows,
        "total_discount": sum(t.discount for t in rows),
    })


@page("viewer")
def backtest_status(request: Request, form: Form) -> Response:
    return JSONResponse(_run(request).to_dict())


@page("editor")
def backtest_cancel(request: Request, form: Form) -> Response:
    run = _run(request)
    if run.status == "running":
        run.cancel.set()
        flash(request, "Backtest cancelled.")
    return redirect(request, "backtest_run", name=run.ruleset, run_id=run.id)


routes = [
    Route("/rulesets/{name}/backtest", backtest_form, name="backtest"),
    Route("/rulesets/{name}/backtest/start", backtest_start, methods=["POST"],
          name="backtest_start"),
    Route("/rulesets/{name}/backtest/{run_id}", backtest_run, name="backtest_run"),
    Route("/rulesets/{name}/backtest/{run_id}/status", backtest_status, name="backtest_status"),
    Route("/rulesets/{name}/backtest/{run_id}/cancel", backtest_cancel, methods=["POST"],
          name="backtest_cancel"),
]
