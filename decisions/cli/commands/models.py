"""``decisions models train|retrain|list|promote|rollback|drift``: predictive models.

Training replays the event archive through the worker's state code (needs PostgreSQL and
Redis; the replay uses a scratch key prefix and cleans up after itself). ``retrain`` is
meant for cron: one run at a time (a PostgreSQL advisory lock), a gate before promotion,
and a non-zero exit only when something failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import redis
from sqlalchemy import Engine, text

from decisions.cli import invocation
from decisions.core import stackfile
from decisions.core.db import check_database, make_engine, redact
from decisions.core.errors import ConfigError, DecisionsError, ServiceUnavailable
from decisions.core.events import parse_time
from decisions.core.resp import cluster
from decisions.core.settings import Settings
from decisions.runtime.ml.dataset import CHURN_RISK
from decisions.runtime.ml.features import MODEL_NAMES

if TYPE_CHECKING:
    from decisions.runtime.ml import pipeline, registry

RETRAIN_LOCK = "decisions.core.models.retrain"
# decisions.runtime.ml.train.ALGORITHMS, spelled out so `decisions --help` needs no scikit-learn
ALGORITHMS = ("auto", "logreg", "hgb")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("models", help="train, promote, roll back and watch models")
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION")
    sub.required = True

    train = sub.add_parser("train", help="train one model on archived history and gate it")
    train.add_argument("model", choices=MODEL_NAMES)
    _training_options(train)
    train.add_argument("--from", dest="start", type=_when, help="period start (ISO date/time)")
    train.add_argument("--to", dest="end", type=_when, help="period end (default: now)")
    train.add_argument("--no-promote", action="store_true",
                       help="register the version but leave the active one in place")
    train.add_argument("--force", action="store_true",
                       help="promote even if the gate finds it worse than the active version")
    train.set_defaults(handler=train_handler)

    retrain = sub.add_parser("retrain", help="train, gate and promote (safe to run from cron)")
    retrain.add_argument("models", nargs="*", type=_model, metavar="MODEL",
                         help=f"models to retrain (default: all: {', '.join(MODEL_NAMES)})")
    _training_options(retrain)
    retrain.set_defaults(handler=retrain_handler)

    sample = sub.add_parser(
        "sample-history",
        help="write a generated shopping history into the event archive, to train on "
             "(demo and scratch databases)")
    sample.add_argument("--users", type=int, default=400, help="shoppers (default 400)")
    sample.add_argument("--days", type=float, default=30.0,
                        help="days of history ending now (default 30)")
    sample.add_argument("--seed", type=int, default=22, help="random seed (ids u-SEED-N)")
    sample.add_argument("--yes", action="store_true",
                        help="needed with DECISIONS_DATABASE_URL set: confirms that database "
                             "is a scratch or demo one")
    sample.set_defaults(handler=sample_history_handler)

    listing = sub.add_parser("list", help="list model versions and their holdout figures")
    listing.add_argument("model", nargs="?", choices=MODEL_NAMES)
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=list_handler)

    promote = sub.add_parser("promote", help="activate a version whose gate passed")
    promote.add_argument("model", choices=MODEL_NAMES)
    promote.add_argument("version", type=int)
    promote.add_argument("--force", action="store_true", help="skip the gate (explicit override)")
    promote.set_defaults(handler=promote_handler)

    rollback = sub.add_parser("rollback", help="activate an earlier version")
    rollback.add_argument("model", choices=MODEL_NAMES)
    rollback.add_argument("--to", type=int, help="version (default: the one before the active)")
    rollback.set_defaults(handler=rollback_handler)

    drift = sub.add_parser("drift", help="PSI per feature and of the score: training vs live")
    drift.add_argument("models", nargs="*", type=_model, metavar="MODEL",
                       help=f"models to check (default: all: {', '.join(MODEL_NAMES)})")
    drift.add_argument("--hours", type=float, default=24.0, help="live window (default 24)")
    drift.add_argument("--end", type=_when, help="end of the live window (default: now)")
    drift.add_argument("--warmup-days", type=float, default=None,
                       help="history replayed before the window to warm the state (default: "
                            "as much as the training rows had: warm-up + half the window)")
    drift.add_argument("--fail-on-shift", action="store_true",
                       help="exit 3 when a model's population has shifted (PSI > 0.25)")
    drift.add_argument("--json", action="store_true", help="print JSON")
    drift.set_defaults(handler=drift_handler)


def _training_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--days", type=float, default=30.0,
                        help="period length when --from is not given (default 30); the "
                             "period ends now, or --churn-days ago for churn_risk")
    parser.add_argument("--algorithm", choices=ALGORITHMS, default="auto",
                        help="auto: logistic regression unless boosting wins on calibration rows")
    parser.add_argument("--holdout", type=float, default=0.2,
                        help="newest share of rows held out for the report and gate (default 0.2)")
    parser.add_argument("--churn-days", type=float, default=30.0,
                        help="churn_risk: no purchase in this many days is a lapse (default 30)")
    parser.add_argument("--warmup-days", type=float, default=35.0,
                        help="history replayed before the period to warm the state (default 35)")
    parser.add_argument("--tolerance", type=float, default=0.0,
                        help="gate: allowed holdout ROC AUC drop vs the active version (default 0)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def _model(value: str) -> str:
    if value not in MODEL_NAMES:
        raise argparse.ArgumentTypeError(
            f"unknown model {value!r}; expected one of {', '.join(MODEL_NAMES)}"
        )
    return value


def _when(value: str) -> datetime:
    try:
        return parse_time(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO date or date-time, got {value!r}"
        ) from None


@contextmanager
def _services(settings: Settings, need_redis: bool = True) -> Iterator[tuple[Engine, Any]]:
    url = stackfile.require(settings, "database_url")
    engine = make_engine(url, pool_size=2)
    client = None
    try:
        check_database(engine, url)
        if need_redis:
            redis_url = stackfile.require(settings, "redis_url")
            client = cluster.connect(redis_url, settings.redis_cluster, socket_timeout=30)
            try:
                client.ping()
            except redis.RedisError as exc:
                raise ServiceUnavailable("Redis", redact(redis_url), "DECISIONS_REDIS_URL",
                                         str(exc)) from None
        yield engine, client
    finally:
        if client is not None:
            client.close()
        engine.dispose()


def _period(args: argparse.Namespace, model: str) -> tuple[datetime, datetime]:
    """The rows' period. Without --to, churn_risk's ends --churn-days ago: a row's label
    needs the days after it, so later rows could not be labelled yet."""
    end = getattr(args, "end", None)
    if end is None:
        end = datetime.now(UTC)
        if model == CHURN_RISK:
            end -= timedelta(days=args.churn_days)
    start = getattr(args, "start", None) or end - timedelta(days=args.days)
    if start >= end:
        raise ConfigError(f"--from {start.isoformat()} is not before --to {end.isoformat()}")
    return start, end


def _train(engine: Engine, client: Any, model: str, args: argparse.Namespace,
           promote: bool, force: bool) -> pipeline.Outcome:
    from decisions.runtime.ml import pipeline  # scikit-learn loads only when used

    start, end = _period(args, model)
    return pipeline.train_from_archive(
        engine, client, model, start, end, algorithm=args.algorithm,
        holdout_fraction=args.holdout, churn_days=args.churn_days,
        warmup_days=args.warmup_days, promote=promote, force=force, tolerance=args.tolerance,
    )


def train_handler(args: argparse.Namespace, settings: Settings) -> int:
    with _services(settings) as (engine, client):
        outcome = _train(engine, client, args.model, args, not args.no_promote, args.force)
    _print_outcome(outcome, args.json)
    return 0


def retrain_handler(args: argparse.Namespace, settings: Settings) -> int:

    models = args.models or list(MODEL_NAMES)
    failed = 0
    with _services(settings) as (engine, client), engine.connect() as lock:
        got = lock.execute(text("SELECT pg_try_advisory_lock(hashtext(:k))"),
                           {"k": RETRAIN_LOCK}).scalar()
        lock.commit()
        if not got:
            print("decisions: another `models retrain` is running; nothing done", file=sys.stderr)
            return 0
        try:
            for model in models:
                try:
                    outcome = _train(engine, client, model, args, promote=True, force=False)
                except DecisionsError as exc:
                    failed += 1
                    print(f"decisions: {model}: {exc}", file=sys.stderr)
                    continue
                _print_outcome(outcome, args.json)
        finally:
            lock.execute(text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": RETRAIN_LOCK})
            lock.commit()
    return 1 if failed else 0


def _print_outcome(outcome: pipeline.Outcome, as_json: bool) -> None:
    info, m = outcome.version, outcome.version.metrics
    if as_json:
        print(json.dumps({"model": info.name, "version": info.version,
                          "promoted": outcome.promoted, "metrics": m}, default=str))
        return
    h = m["holdout"]
    print(f"{info.name} version {info.version} ({info.algorithm}), trained on "
          f"{m['rows']['fit']} rows, calibrated on {m['rows']['calibration']}, "
          f"holdout {m['rows']['holdout']} rows ({h['positives']} positive)")
    print(f"  choice: {m['choice']['why']}")
    for algo, cand in m["candidates"].items():
        c = cand["holdout"]
        print(f"  {algo:<7} holdout ROC AUC {c['roc_auc']:.4f}  PR AUC {c['pr_auc']:.4f}  "
              f"Brier {c['brier']:.4f}  ECE {c['ece']:.4f}")
    print(f"  threshold {h['threshold']:.3f}: precision {h['precision']:.3f}, "
          f"recall {h['recall']:.3f}, F1 {h['f1']:.3f}")
    print("  calibration (predicted → observed, rows): " + ", ".join(
        f"{b['predicted']:.2f}→{b['observed']:.2f} ({b['n']})" for b in h["calibration"]))
    verdict = "promoted: now active" if outcome.promoted else "registered, NOT active"
    print(f"  gate: {outcome.gate['reason']} — {verdict}")


def list_handler(args: argparse.Namespace, settings: Settings) -> int:
    from decisions.runtime.ml import registry  # scikit-learn loads only when used

    with _services(settings, need_redis=False) as (engine, _):
        rows = registry.versions(engine, args.model)
    if args.json:
        print(json.dumps([_version_dict(v) for v in rows], default=str))
        return 0
    if not rows:
        print(f"no model versions yet: run `{invocation.command()} models train MODEL`")
        return 0
    print(f"{'model':<16} {'ver':>3}  {'act':<3} {'algorithm':<8} {'ROC AUC':>7} {'PR AUC':>7}  "
          f"{'trained on':<23} created")
    for v in rows:
        h = v.metrics.get("holdout", {})
        window = (f"{v.train_from:%Y-%m-%d}..{v.train_to:%Y-%m-%d}"
                  if v.train_from and v.train_to else "-")
        print(f"{v.name:<16} {v.version:>3}  {'*' if v.active else '':<3} {v.algorithm:<8} "
              f"{_fmt(h.get('roc_auc')):>7} {_fmt(h.get('pr_auc')):>7}  {window:<23} "
              f"{v.created_at:%Y-%m-%d %H:%M}")
    return 0


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


def _version_dict(v: registry.VersionInfo) -> dict[str, Any]:
    return {"model": v.name, "version": v.version, "active": v.active,
            "algorithm": v.algorithm, "holdout": v.metrics.get("holdout"),
            "gate": v.metrics.get("gate"), "features": v.features,
            "train_from": v.train_from, "train_to": v.train_to,
            "code_version": v.code_version, "sha256": v.sha256, "created_at": v.created_at}


def promote_handler(args: argparse.Namespace, settings: Settings) -> int:
    from decisions.runtime.ml import pipeline  # scikit-learn loads only when used

    with _services(settings, need_redis=False) as (engine, _):
        info = pipeline.promote(engine, args.model, args.version, force=args.force)
    print(f"{info.name} version {info.version} is active")
    return 0


def rollback_handler(args: argparse.Namespace, settings: Settings) -> int:
    from decisions.runtime.ml import pipeline  # scikit-learn loads only when used

    with _services(settings, need_redis=False) as (engine, _):
        info = pipeline.rollback(engine, args.model, args.to)
    print(f"{info.name} rolled back: version {info.version} is active")
    return 0


def drift_handler(args: argparse.Namespace, settings: Settings) -> int:
    from decisions.runtime.ml import pipeline, registry  # scikit-learn loads only when used

    models = args.models or list(MODEL_NAMES)
    results = []
    with _services(settings) as (engine, client):
        active = registry.active_heads(engine)
        for model in models:
            if model not in active:
                results.append({"model": model, "status": "no active version"})
                continue
            results.append(pipeline.check_drift(engine, client, model, end=args.end,
                                                hours=args.hours, warmup_days=args.warmup_days))
    if args.json:
        print(json.dumps(results))
    else:
        for r in results:
            if "features" not in r or not r.get("rows"):
                print(f"{r['model']}: {r['status']}")
                continue
            lifetime = set(r.get("depth_dependent", ()))
            worst = sorted(((k, v) for k, v in r["features"].items() if k not in lifetime),
                           key=lambda kv: -kv[1])[:5]
            print(f"{r['model']} version {r['version']}: {r['status']} — score PSI "
                  f"{r['score']:.3f} over {r['rows']} live rows ({r['from']} .. {r['to']}, "
                  f"{r['warmup_days']:g} days of history replayed before)")
            print("  highest feature PSI: "
                  + ", ".join(f"{name} {value:.3f}" for name, value in worst))
            if lifetime:
                print("  lifetime features (PSI also reflects the history replayed): "
                      + ", ".join(f"{k} {r['features'][k]:.3f}" for k in sorted(lifetime)))
    shifted = any(r.get("status") == "shifted" for r in results)
    return 3 if shifted and args.fail_on_shift else 0


def sample_history_handler(args: argparse.Namespace, settings: Settings) -> int:
    """Generated shoppers whose buying behaviour is known (``ml.synthetic``), archived as
    if the worker had seen them, so ``models train`` has history on a fresh demo."""
    from decisions.runtime.archive import EventArchive
    from decisions.runtime.ml.synthetic import generate

    if settings.database_url and not args.yes:
        raise ConfigError(
            "sample-history writes generated events into the event archive of "
            f"DECISIONS_DATABASE_URL ({redact(settings.database_url)}), where backtests and "
            "training read them; pass --yes if that database is a scratch or demo one")
    if args.users < 1 or args.days <= 0:
        raise ConfigError("--users must be at least 1 and --days more than 0")
    now = datetime.now(UTC)
    events, _ = generate(users=args.users, days=args.days, seed=args.seed,
                         start=now - timedelta(days=args.days))
    events = [e for e in events if e.ts < now]
    with _services(settings, need_redis=False) as (engine, _):
        archive = EventArchive(engine)
        written = sum(archive.write_batch(events[i:i + 5000])
                      for i in range(0, len(events), 5000))
    purchases = sum(1 for e in events if e.type == "purchase")
    cmd = invocation.command()
    print(f"archived {written} generated events ({purchases} purchases) of {args.users} "
          f"shoppers (ids u-{args.seed}-N) from {events[0].ts:%Y-%m-%d} to now"
          if events else "nothing generated")
    print(f"next: {cmd} models train purchase_intent --days {args.days:g} --warmup-days 0")
    return 0
