"""The model lifecycle the CLI drives: train → register → gate → promote; rollback; drift.

Promotion gate: a new version becomes active only when its holdout ROC AUC is not below
the active version's ROC AUC on *the same holdout rows* (minus ``tolerance``, default 0),
or when the caller forces it. The comparison is stored with the new version
(``metrics["gate"]``), so ``promote`` later can tell whether it still holds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from decisions.core.errors import Conflict, NotFound
from decisions.runtime.archive import EventArchive
from decisions.runtime.ml import drift, registry
from decisions.runtime.ml.artifact import CompiledModel, ModelError
from decisions.runtime.ml.dataset import (
    CHURN_RISK,
    SESSION_GAP_SECONDS,
    Table,
    live_rows,
    load_customers,
    replay_archive,
    table_from_archive,
)
from decisions.runtime.ml.features import ALL_FEATURES, LIFETIME_FEATURES
from decisions.runtime.ml.train import TrainResult, evaluate_on, train

log = logging.getLogger(__name__)
DEFAULT_WARMUP = 35.0


@dataclass
class Outcome:
    version: registry.VersionInfo
    promoted: bool
    gate: dict[str, Any]
    result: TrainResult


def gate(
    result: TrainResult,
    active: tuple[registry.VersionInfo, CompiledModel] | None,
    tolerance: float = 0.0,
) -> dict[str, Any]:
    """Compare the candidate with the active version on the candidate's holdout rows."""
    new = result.metrics["holdout"]
    if active is None:
        return {"passed": True, "against": None, "reason": "no active version",
                "candidate_roc_auc": new["roc_auc"], "active_roc_auc": None}
    info, model = active
    try:
        old = evaluate_on(model, result.holdout)
    except KeyError as exc:  # the active version uses features this code no longer has
        return {"passed": False, "against": info.version, "candidate_roc_auc": new["roc_auc"],
                "active_roc_auc": None,
                "reason": f"active version {info.version} cannot be evaluated here: {exc}"}
    passed = new["roc_auc"] >= old["roc_auc"] - tolerance
    verdict = "not worse than" if passed else "worse than"
    return {
        "passed": bool(passed),
        "against": info.version,
        "candidate_roc_auc": new["roc_auc"],
        "active_roc_auc": old["roc_auc"],
        "candidate_pr_auc": new["pr_auc"],
        "active_pr_auc": old["pr_auc"],
        "tolerance": tolerance,
        "reason": (f"holdout ROC AUC {new['roc_auc']:.4f} is {verdict} active version "
                   f"{info.version}'s {old['roc_auc']:.4f} on the same rows"),
    }


def register_and_gate(
    engine: Engine,
    result: TrainResult,
    *,
    train_from: datetime | None,
    train_to: datetime | None,
    promote: bool = True,
    force: bool = False,
    tolerance: float = 0.0,
) -> Outcome:
    name = result.model.name
    try:
        active: tuple[registry.VersionInfo, CompiledModel] | None = registry.load_version(
            engine, name
        )
    except NotFound:
        active = None
    except ModelError as exc:  # the active artifact is unreadable: it cannot defend its place
        log.error("active %s version cannot be loaded: %s", name, exc)
        active = None
    verdict = gate(result, active, tolerance)
    metrics = {**result.metrics, "gate": verdict}
    info = registry.register(
        engine, result.model, algorithm=result.algorithm, metrics=metrics,
        train_from=train_from, train_to=train_to, reference=result.reference,
    )
    promoted = False
    if promote and (verdict["passed"] or force):
        info = registry.activate(engine, name, info.version)
        promoted = True
    return Outcome(info, promoted, verdict, result)


def train_from_archive(
    engine: Engine,
    client: Any,
    model: str,
    start: datetime,
    end: datetime,
    *,
    algorithm: str = "auto",
    holdout_fraction: float = 0.2,
    churn_days: float = 30.0,
    warmup_days: float = 35.0,
    promote: bool = True,
    force: bool = False,
    tolerance: float = 0.0,
) -> Outcome:
    table: Table = table_from_archive(
        engine, client, model, start, end, warmup_days=warmup_days, churn_days=churn_days
    )
    embargo = churn_days * 86400 if model == CHURN_RISK else SESSION_GAP_SECONDS
    result = train(table, algorithm=algorithm, holdout_fraction=holdout_fraction,
                   embargo_seconds=embargo)
    result.metrics["params"] = {"churn_days": churn_days, "warmup_days": warmup_days,
                                "holdout_fraction": holdout_fraction}
    return register_and_gate(engine, result, train_from=start, train_to=end,
                             promote=promote, force=force, tolerance=tolerance)


def promote(
    engine: Engine, name: str, version: int, *, force: bool = False
) -> registry.VersionInfo:
    """Activate ``version`` if its recorded gate beat the version active now, or if forced."""
    target = registry.get(engine, name, version)
    try:
        current: registry.VersionInfo | None = registry.get(engine, name)
    except NotFound:
        current = None
    if not force and current is not None and current.version != version:
        recorded = target.metrics.get("gate") or {}
        if not (recorded.get("passed") and recorded.get("against") == current.version):
            raise Conflict(
                f"version {version} of {name} has no passing gate against the active version "
                f"{current.version} ({recorded.get('reason', 'never compared')}); "
                "retrain, or promote with --force"
            )
    return registry.activate(engine, name, version)


def rollback(engine: Engine, name: str, to: int | None = None) -> registry.VersionInfo:
    """Activate ``to``, or the newest version older than the active one (an explicit override)."""
    if to is None:
        current = registry.get(engine, name)
        older = [v.version for v in registry.versions(engine, name) if v.version < current.version]
        if not older:
            raise NotFound(f"model {name!r} has no version older than {current.version}")
        to = max(older)
    return registry.activate(engine, name, to)


def check_drift(
    engine: Engine,
    client: Any,
    model: str,
    *,
    end: datetime | None = None,
    hours: float = 24.0,
    warmup_days: float | None = None,
    record: bool = True,
) -> dict[str, Any]:
    """PSI of the active version's features and score: training rows vs the last ``hours``.

    How much history is replayed before the live window matters: lifetime features
    (days since first seen, orders, value) only see the replayed history. By default the
    live rows get as much as the training rows had on average: the version's warm-up plus
    half its training window.
    """
    info, compiled = registry.load_version(engine, model)
    if warmup_days is None:
        warmup_days = float(info.metrics.get("params", {}).get("warmup_days", DEFAULT_WARMUP))
        if info.train_from is not None and info.train_to is not None:
            warmup_days += (info.train_to - info.train_from).total_seconds() / 86400 / 2
    ref = registry.reference(engine, info.id)
    end = end or datetime.now(UTC)
    start = end - timedelta(hours=hours)
    snapshots = replay_archive(EventArchive(engine), client,
                               start - timedelta(days=warmup_days), end)
    X_all = live_rows(model, snapshots, start, end, load_customers(engine))
    index = {n: i for i, n in enumerate(ALL_FEATURES)}
    X = X_all[:, [index[f] for f in compiled.features]]
    if X.shape[0] == 0:
        return {"model": model, "version": info.version, "rows": 0, "status": "no traffic",
                "from": start.isoformat(), "to": end.isoformat(), "features": {}, "score": None}
    result = drift.compare(ref, compiled.features, X, compiled.predict_batch(X),
                           depth_dependent=LIFETIME_FEATURES)
    result.update({"model": model, "version": info.version, "from": start.isoformat(),
                   "to": end.isoformat(), "warmup_days": warmup_days})
    if record:
        registry.record_drift(engine, info.id, result)
    return result
