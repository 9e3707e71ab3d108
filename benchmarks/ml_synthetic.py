"""Does the event pipeline recover a known truth, and how fast is scoring?

A generated storefront stream (``decisions.runtime.ml.synthetic``: every session's true purchase
probability and every user's true purchase rate are known) goes the production way:
archive (PostgreSQL) → replay through the worker's Lua state code (Redis) → feature
module → training with a time-based holdout → registry → ``Scorer``. Printed:

* archive write and replay throughput;
* for each model, holdout ROC AUC of the model beside the *oracle* (the true probability
  scored against the same realised outcomes: the best any model can do), and how close
  the calibrated probabilities are to the true ones;
* ``Scorer.score`` latency per event (both models, real snapshots): p50/p99/max, next to
  scikit-learn's own single-row ``predict_proba``.

    .venv/bin/python benchmarks/ml_synthetic.py [--users 600] [--days 30]

Starts an embedded PostgreSQL and Valkey under var/ unless --database-url/--redis-url.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import redis
from sklearn.metrics import roc_auc_score
from sqlalchemy import Engine

from decisions.cli import migrate
from decisions.cli.stack.embedded import EmbeddedStack
from decisions.core.db import make_engine
from decisions.runtime import state
from decisions.runtime.archive import EventArchive
from decisions.runtime.ml import pipeline
from decisions.runtime.ml.artifact import CompiledModel
from decisions.runtime.ml.dataset import CHURN_RISK, PURCHASE_INTENT, Table, build_table
from decisions.runtime.ml.features import ALL_FEATURES, FEATURE_SETS
from decisions.runtime.ml.scoring import Scorer
from decisions.runtime.ml.synthetic import generate
from decisions.runtime.ml.train import fit_candidate, time_split, train

ROOT = Path(__file__).resolve().parent.parent
CHURN_DAYS = 7.0




def percentiles(samples: list[float]) -> str:
    us = np.array(samples) * 1e6
    return (f"p50 {np.percentile(us, 50):6.1f} µs   p99 {np.percentile(us, 99):6.1f} µs   "
            f"max {us.max():7.1f} µs")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=600)
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--database-url", help="a PostgreSQL server (a scratch database is made)")
    parser.add_argument("--redis-url", help="a Redis server (a scratch key prefix is used)")
    args = parser.parse_args()

    var = ROOT / "var" / f"bench-ml-{os.getpid()}"
    stack = EmbeddedStack(var)
    try:
        server = args.database_url or stack.start_postgres()
        redis_url = args.redis_url or stack.start_redis()
        url = migrate.create_database(server, f"decisions_bench_ml_{os.getpid()}")
        engine = make_engine(url)
        client = redis.Redis.from_url(redis_url)
        run(engine, client, args.users, args.days)
        engine.dispose()
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        stack.stop()
        shutil.rmtree(var, ignore_errors=True)
    return 0


def run(engine: Engine, client: redis.Redis, users: int, days: float) -> None:
    events, truth = generate(users=users, days=days, seed=1)
    print(f"generated {len(events)} events, {users} users, {days:g} days, "
          f"{sum(e.type == 'purchase' for e in events)} purchases")

    archive = EventArchive(engine)
    started = time.perf_counter()
    for i in range(0, len(events), 500):  # the worker's batch size
        archive.write_batch(events[i : i + 500])
    took = time.perf_counter() - started
    print(f"archive: {len(events) / took:,.0f} events/s in batches of 500")

    started = time.perf_counter()
    stored = list(archive.read(events[0].ts, events[-1].ts + timedelta(seconds=1)))
    snapshots = list(state.replay(stored, client, "bench-ml:"))
    state.clear_scratch(client, "bench-ml:")
    took = time.perf_counter() - started
    print(f"read + replay through the Lua state: {len(snapshots) / took:,.0f} events/s")

    start, end = events[0].ts + timedelta(days=2), events[-1].ts
    intent = build_table(PURCHASE_INTENT, snapshots, start, end)
    churn = build_table(CHURN_RISK, snapshots, start, end, churn_days=CHURN_DAYS)

    print("\npurchase_intent (a purchase later in the same session)")
    result = train(intent, embargo_seconds=1800)
    report_model(result.metrics)
    hold = result.holdout
    assert hold.ids is not None
    last = np.array([eid in truth.session_p for eid in hold.ids])
    p_true = np.array([truth.session_p[eid] for eid in hold.ids[last]])
    p_model = result.model.predict_batch(hold.columns(result.model.features)[last])
    y = hold.y[last]
    print(f"  on the {int(last.sum())} holdout rows whose true probability is known "
          "(last browsing event of a session):")
    print(f"    ROC AUC model {roc_auc_score(y, p_model):.4f}   oracle (true p) "
          f"{roc_auc_score(y, p_true):.4f}")
    print(f"    |model − true p|: mean {np.mean(np.abs(p_model - p_true)):.3f}, "
          f"correlation {np.corrcoef(p_model, p_true)[0, 1]:.3f}")
    pipeline.register_and_gate(engine, result, train_from=start, train_to=end)

    print(f"\nchurn_risk (no purchase in the next {CHURN_DAYS:g} days)")
    cresult = train(churn, embargo_seconds=CHURN_DAYS * 86400)
    report_model(cresult.metrics)
    chold = cresult.holdout
    assert chold.users is not None
    p_true = np.array([truth.p_no_purchase(u, CHURN_DAYS) for u in chold.users])
    p_model = cresult.model.predict_batch(chold.columns(cresult.model.features))
    print(f"    ROC AUC model {roc_auc_score(chold.y, p_model):.4f}   oracle (true rate) "
          f"{roc_auc_score(chold.y, p_true):.4f}")
    print(f"    |model − true p|: mean {np.mean(np.abs(p_model - p_true)):.3f}, "
          f"correlation {np.corrcoef(p_model, p_true)[0, 1]:.3f}")
    pipeline.register_and_gate(engine, cresult, train_from=start, train_to=end)

    latency(engine, snapshots, {PURCHASE_INTENT: intent, CHURN_RISK: churn})


def sklearn_single_row(algo: str, estimator: Any) -> Callable[[np.ndarray], Any]:
    if algo == "logreg":
        scaler, lr = estimator
        return lambda x: lr.predict_proba(scaler.transform(x))
    return lambda x: estimator.predict_proba(x)


def report_model(m: dict[str, Any]) -> None:
    print(f"  rows {m['rows']}; choice: {m['choice']['why']} → {m['choice']['algorithm']}")
    for algo, cand in m["candidates"].items():
        h = cand["holdout"]
        print(f"  {algo:<7} holdout ROC AUC {h['roc_auc']:.4f}  PR AUC {h['pr_auc']:.4f}  "
              f"Brier {h['brier']:.4f}  ECE {h['ece']:.4f}  "
              f"P/R@{h['threshold']:.2f} {h['precision']:.3f}/{h['recall']:.3f}")


def latency(engine: Engine, snapshots: list[Any], tables: dict[str, Table]) -> None:
    sample = [s for _, s in snapshots[-20000:]]
    print(f"\nScorer.score latency per event, real snapshots (load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs: on a busy box the p99 is the "
          "scheduler's, the p50 is ours)")
    for label in ("as trained (gate's choice)", "both models boosting (worst case)"):
        if label.startswith("both"):
            for name, table in tables.items():
                embargo = CHURN_DAYS * 86400 if name == CHURN_RISK else 1800
                pipeline.register_and_gate(engine, train(table, algorithm="hgb",
                                                         embargo_seconds=embargo),
                                           train_from=None, train_to=None, force=True)
        scorer = Scorer(engine)
        scorer.refresh()
        algos = {n: m.model.kind for n, m in scorer._models.items()}
        for s in sample[:500]:  # warm up
            scorer.score(s, {})
        for round_ in range(1, 4):
            timings = []
            for s in sample:
                t0 = time.perf_counter()
                scorer.score(s, {})
                timings.append(time.perf_counter() - t0)
            print(f"  {label} {algos}, round {round_}: {percentiles(timings)}")

    intent = tables[PURCHASE_INTENT]
    split = time_split(intent)
    names = FEATURE_SETS[PURCHASE_INTENT]
    X = split.fit.columns(names)
    for algo in ("logreg", "hgb"):
        kind, arrays, estimator = fit_candidate(algo, X, split.fit.y)
        compiled = CompiledModel(PURCHASE_INTENT, tuple(names), kind, arrays,
                                 {"method": "sigmoid", "a": 1.0, "b": 0.0})
        sklearn_predict = sklearn_single_row(algo, estimator)
        rows = X[:3000]
        fast, slow = [], []
        for x in rows:
            t0 = time.perf_counter()
            compiled.predict(x)
            fast.append(time.perf_counter() - t0)
        for x in rows[:1000]:
            t0 = time.perf_counter()
            sklearn_predict(x.reshape(1, -1))
            slow.append(time.perf_counter() - t0)
        print(f"  {algo:<7} compiled predict:           {percentiles(fast)}")
        print(f"  {algo:<7} scikit-learn predict_proba: {percentiles(slow)}")
    print(f"  (Scorer.score computes the {len(ALL_FEATURES)} features once per event)")


if __name__ == "__main__":
    raise SystemExit(main())
