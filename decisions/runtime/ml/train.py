"""Training: time-based split, two candidate algorithms, calibration, holdout report.

The rows are split by time, never at random: ``holdout`` is the newest
``holdout_fraction`` of the rows; rows whose outcome window reaches into it (the
``embargo_seconds`` before it) are dropped, so no label learnt from looks into the period
the report is made on; of the rest, the newest quarter calibrates and the older rows fit.

Candidates are a logistic regression (standardised features) and a histogram gradient
boosting model. Each is fitted on ``fit`` and calibrated on ``calibration`` (isotonic with
enough positives, else Platt's sigmoid). ``algorithm="auto"`` keeps the logistic
regression unless boosting beats it by at least ``AUTO_MARGIN`` ROC AUC on the
calibration rows: the holdout is only reported on, never used to choose.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from decisions.runtime.ml import drift
from decisions.runtime.ml.artifact import CompiledModel, ModelError, linear_arrays, tree_arrays
from decisions.runtime.ml.dataset import Table
from decisions.runtime.ml.evaluation import choose_threshold, report
from decisions.runtime.ml.features import FEATURE_SETS

log = logging.getLogger(__name__)

ALGORITHMS = ("auto", "logreg", "hgb")
AUTO_MARGIN = 0.005
MIN_ROWS, MIN_POSITIVES = 100, 10
ISOTONIC_MIN_POSITIVES = 100


@dataclass
class Split:
    fit: Table
    calibration: Table
    holdout: Table


@dataclass
class TrainResult:
    model: CompiledModel
    algorithm: str
    metrics: dict[str, Any]
    reference: dict[str, Any]
    holdout: Table
    candidates: dict[str, dict[str, Any]] = field(default_factory=dict)


def time_split(
    table: Table, holdout_fraction: float = 0.2, calibration_fraction: float = 0.25,
    embargo_seconds: float = 0.0,
) -> Split:
    """Newest ``holdout_fraction`` of the rows to the holdout; of the rows ending at least
    ``embargo_seconds`` before it, the newest ``calibration_fraction`` calibrate, the rest fit.
    """
    ts = np.sort(table.ts, kind="stable")
    n = len(ts)
    cut_h = ts[min(int(n * (1 - holdout_fraction)), n - 1)]
    before = np.sort(ts[ts < cut_h - embargo_seconds])
    m = len(before)
    cut_c = before[min(int(m * (1 - calibration_fraction)), m - 1)] if m else cut_h
    fit = table.ts < cut_c
    cal = (table.ts >= cut_c) & (table.ts < cut_h - embargo_seconds)
    hold = table.ts >= cut_h
    return Split(table.subset(fit), table.subset(cal), table.subset(hold))


def _check(part: Table, what: str) -> None:
    positives = int(part.y.sum())
    if len(part) < MIN_ROWS or min(positives, len(part) - positives) < MIN_POSITIVES:
        raise ModelError(
            f"not enough data to train {part.model}: the {what} rows have {len(part)} rows and "
            f"{positives} positives (need {MIN_ROWS} rows and {MIN_POSITIVES} of each class); "
            "choose a longer period"
        )


def fit_candidate(
    algorithm: str, X: np.ndarray, y: np.ndarray, seed: int = 0
) -> tuple[str, dict[str, np.ndarray], Any]:
    """Fit one algorithm; returns its compiled kind, arrays and the estimator (for checks).

    Fitting runs on one thread: deterministic, polite to a worker on the same host, and on
    small shared machines much faster than OpenMP threads fighting for cores (measured 7×).
    """
    with threadpool_limits(limits=1):
        return _fit(algorithm, X, y, seed)


def _fit(
    algorithm: str, X: np.ndarray, y: np.ndarray, seed: int
) -> tuple[str, dict[str, np.ndarray], Any]:
    if algorithm == "logreg":
        scaler = StandardScaler().fit(X)
        scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
        lr = LogisticRegression(C=1.0, max_iter=3000)
        lr.fit((X - scaler.mean_) / scale, y)
        arrays = linear_arrays(lr.coef_, float(lr.intercept_[0]), scaler.mean_, scale)
        return "linear", arrays, (scaler, lr)
    if algorithm == "hgb":
        hgb = HistGradientBoostingClassifier(
            learning_rate=0.06,
            max_iter=300,
            max_depth=6,
            max_leaf_nodes=24,
            min_samples_leaf=40,
            l2_regularization=1.0,
            early_stopping=True,
            validation_fraction=0.15,
            n_iter_no_change=20,
            random_state=seed,
        )
        hgb.fit(X, y)
        return "trees", tree_arrays(hgb), hgb
    raise ModelError(f"unknown algorithm {algorithm!r}; expected one of {', '.join(ALGORITHMS)}")


def fit_calibration(raw: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Map raw scores to probabilities: isotonic with enough positives, else Platt's sigmoid."""
    if int(y.sum()) >= ISOTONIC_MIN_POSITIVES:
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(raw, y)
        x, y_ = iso.X_thresholds_.tolist(), iso.y_thresholds_.tolist()
        return {"method": "isotonic", "x": x, "y": y_}
    lr = LogisticRegression(C=1e6, max_iter=1000).fit(raw.reshape(-1, 1), y)
    return {"method": "sigmoid", "a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])}


def build_model(
    name: str, features: tuple[str, ...], algorithm: str, split: Split, seed: int = 0
) -> tuple[CompiledModel, Any]:
    Xf = split.fit.columns(features)
    kind, arrays, estimator = fit_candidate(algorithm, Xf, split.fit.y, seed)
    model = CompiledModel(name, features, kind, arrays, {"method": "sigmoid", "a": 1.0, "b": 0.0})
    _self_check(model, estimator, Xf[:500])
    Xc = split.calibration.columns(features)
    model = replace(model, calibration=fit_calibration(model.raw_batch(Xc), split.calibration.y))
    model.threshold = choose_threshold(split.calibration.y, model.predict_batch(Xc))
    return model, estimator


def _self_check(model: CompiledModel, estimator: Any, X: np.ndarray) -> None:
    """The compiled form must reproduce scikit-learn's scores exactly."""
    if model.kind == "trees":
        expected = estimator.decision_function(X)
    else:
        scaler, lr = estimator
        scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
        expected = lr.decision_function((X - scaler.mean_) / scale)
    single = np.array([model.raw(x) for x in X[:100]])
    if not (np.allclose(model.raw_batch(X), expected, rtol=1e-7, atol=1e-7)
            and np.allclose(single, expected[:100], rtol=1e-7, atol=1e-7)):
        raise ModelError("compiled model does not reproduce scikit-learn's scores")


def train(
    table: Table,
    *,
    algorithm: str = "auto",
    features: tuple[str, ...] | None = None,
    holdout_fraction: float = 0.2,
    embargo_seconds: float = 0.0,
    seed: int = 0,
) -> TrainResult:
    if algorithm not in ALGORITHMS:
        choices = ", ".join(ALGORITHMS)
        raise ModelError(f"unknown algorithm {algorithm!r}; expected one of {choices}")
    names = tuple(features or FEATURE_SETS[table.model])
    _check(table, "period's")
    split = time_split(table, holdout_fraction, embargo_seconds=embargo_seconds)
    for part, what in ((split.fit, "fit"), (split.calibration, "calibration"),
                       (split.holdout, "holdout")):
        _check(part, what)
    tried = ("logreg", "hgb") if algorithm == "auto" else (algorithm,)
    built: dict[str, CompiledModel] = {}
    candidates: dict[str, dict[str, Any]] = {}
    Xc, Xh = split.calibration.columns(names), split.holdout.columns(names)
    for algo in tried:
        model, _ = build_model(table.model, names, algo, split, seed)
        built[algo] = model
        candidates[algo] = {
            "calibration_roc_auc": round(float(roc_auc_score(split.calibration.y,
                                                             model.raw_batch(Xc))), 6),
            "holdout": report(split.holdout.y, model.predict_batch(Xh), model.threshold),
        }
    if algorithm == "auto":
        lr_auc = candidates["logreg"]["calibration_roc_auc"]
        gb_auc = candidates["hgb"]["calibration_roc_auc"]
        chosen = "hgb" if gb_auc >= lr_auc + AUTO_MARGIN else "logreg"
        why = (f"calibration-period ROC AUC logreg {lr_auc:.4f} vs hgb {gb_auc:.4f}; "
               f"hgb is kept only when it wins by >= {AUTO_MARGIN}")
    else:
        chosen, why = algorithm, "chosen explicitly"
    model = built[chosen]
    model.meta = {"algorithm": chosen}
    metrics = {
        "holdout": candidates[chosen]["holdout"],
        "choice": {"algorithm": chosen, "why": why},
        "candidates": candidates,
        "rows": {"fit": len(split.fit), "calibration": len(split.calibration),
                 "holdout": len(split.holdout)},
        "holdout_from": float(split.holdout.ts.min()),
        "holdout_to": float(split.holdout.ts.max()),
        "data": table.info,
    }
    fit_X = split.fit.columns(names)
    reference = drift.reference(names, fit_X, model.predict_batch(fit_X))
    log.info("trained %s with %s: holdout ROC AUC %s, PR AUC %s", table.model, chosen,
             metrics["holdout"]["roc_auc"], metrics["holdout"]["pr_auc"])
    return TrainResult(model, chosen, metrics, reference, split.holdout, candidates)


def evaluate_on(model: CompiledModel, holdout: Table) -> dict[str, Any]:
    """Report of any model (e.g. the active one) on a holdout (for the promotion gate)."""
    X = holdout.columns(model.features)
    return report(holdout.y, model.predict_batch(X), model.threshold)
