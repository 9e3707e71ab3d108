"""``decisions report uplift``: what a holdout experiment measured (docs/rules.md);
``decisions report budget``: what is left of a ruleset's budgets (docs/economics.md)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from decisions.core import stackfile
from decisions.core.db import check_database, make_engine
from decisions.core.errors import NotFound, ValidationError
from decisions.core.events import parse_time
from decisions.core.settings import Settings


def register(sub: Any) -> None:
    report = sub.add_parser("report", help="reports on what rules earn")
    verbs = report.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True
    up = verbs.add_parser(
        "uplift", help="treatment vs holdout: conversion, revenue, discount, verdict",
        description="Compares the shoppers a rule (or ruleset) treated with those its "
        "holdout kept out, over a period of decisions (event time).")
    up.add_argument("ruleset")
    up.add_argument("--rule", help="a rule's own experiment (default: the ruleset's)")
    up.add_argument("--experiment", help="default: the one the published version runs")
    up.add_argument("--from", dest="start", help="ISO date or time (default: 30 days ago)")
    up.add_argument("--to", dest="end", help="ISO date or time (default: now)")
    up.add_argument("--window-days", type=float, default=None,
                    help="attribution window (default: DECISIONS_UPLIFT_WINDOW_DAYS, 7)")
    up.add_argument("--json", action="store_true", help="print JSON")
    up.set_defaults(handler=cmd_uplift)
    bud = verbs.add_parser(
        "budget", help="what is left of a ruleset's budgets (and whether one is spent)",
        description="The budgets the published version of a ruleset (and its rules) sets, "
        "with what has been reserved and what is left, from Redis.")
    bud.add_argument("ruleset")
    bud.add_argument("--json", action="store_true", help="print JSON")
    bud.set_defaults(handler=cmd_budget)


def _when(value: str | None, default: datetime, flag: str) -> datetime:
    if value is None:
        return default
    try:
        return parse_time(value if "T" in value else f"{value}T00:00:00Z")
    except ValueError:
        raise ValidationError(f"{flag}: expected an ISO date or date-time, got {value!r}") \
            from None


def cmd_uplift(args: argparse.Namespace, settings: Settings) -> int:
    from decisions.runtime.uplift import experiment_of, table, uplift
    from rulesets.store import RulesetStore

    url = stackfile.require(settings, "database_url")
    engine = make_engine(url, pool_size=1)
    check_database(engine, url)
    now = datetime.now(UTC)
    start = _when(args.start, now - timedelta(days=30), "--from")
    end = _when(args.end, now, "--to")
    experiment = args.experiment
    if experiment is None:
        try:
            document = RulesetStore(engine).document(args.ruleset)
        except NotFound:
            raise NotFound(f"no published ruleset {args.ruleset!r}: give --experiment") from None
        experiment = experiment_of(document, args.rule)
    window = settings.uplift_window_days if args.window_days is None else args.window_days
    report = uplift(engine, args.ruleset, experiment, start, end, rule=args.rule,
                    window_days=window)
    engine.dispose()
    if args.json:
        sys.stdout.write(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode()
                         + "\n")
    else:
        print(table(report))
    return 0


def cmd_budget(args: argparse.Namespace, settings: Settings) -> int:
    import redis

    from decisions.cli.up import check_redis
    from decisions.runtime.budgets import BudgetStore
    from rulesets.store import RulesetStore

    url = stackfile.require(settings, "database_url")
    engine = make_engine(url, pool_size=1)
    check_database(engine, url)
    try:
        document = RulesetStore(engine).document(args.ruleset)
    except NotFound:
        raise NotFound(f"no published ruleset {args.ruleset!r}") from None
    finally:
        engine.dispose()
    redis_url = stackfile.require(settings, "redis_url")
    check_redis(redis_url)
    client = redis.Redis.from_url(redis_url, socket_timeout=10)
    try:
        left = BudgetStore(client).remaining(document)
    finally:
        client.close()
    if args.json:
        sys.stdout.write(orjson.dumps([r.to_dict() for r in left],
                                      option=orjson.OPT_INDENT_2).decode() + "\n")
    elif not left:
        print(f"{args.ruleset}: no budget set (add budget: {{amount: ..., grants: ...}} to "
              "the ruleset or a rule; docs/economics.md)")
    else:
        for r in left:
            print(r.line())
    return 0
