"""The report of a model on labelled rows: ranking, calibration and the chosen threshold."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    precision_recall_curve,
    roc_auc_score,
)

CALIBRATION_BINS = 10


def choose_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The probability threshold with the best F1 (on rows that are not the holdout)."""
    if y.min() == y.max():
        return 0.5
    precision, recall, thresholds = precision_recall_curve(y, p)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(np.argmax(f1[:-1])) if thresholds.size else 0
    return float(thresholds[best]) if thresholds.size else 0.5


def calibration_table(
    y: np.ndarray, p: np.ndarray, bins: int = CALIBRATION_BINS
) -> list[dict[str, Any]]:
    """Mean predicted vs observed rate in equal-width probability bins (empty bins left out)."""
    which = np.minimum((p * bins).astype(int), bins - 1)
    table = []
    for b in range(bins):
        mask = which == b
        n = int(mask.sum())
        if n:
            table.append(
                {
                    "bin": f"{b / bins:.1f}-{(b + 1) / bins:.1f}",
                    "n": n,
                    "predicted": round(float(p[mask].mean()), 4),
                    "observed": round(float(y[mask].mean()), 4),
                }
            )
    return table


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    which = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.sum() * abs(p[mask].mean() - y[mask].mean())
    return float(total / len(y))


def report(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, Any]:
    """ROC AUC, PR AUC, precision/recall at ``threshold``, Brier, log loss, calibration."""
    y = np.asarray(y, dtype=int)
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    predicted = p >= threshold
    tp = int((predicted & (y == 1)).sum())
    fp = int((predicted & (y == 0)).sum())
    fn = int((~predicted & (y == 1)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    both = y.min() != y.max()
    return {
        "rows": int(len(y)),
        "positives": int(y.sum()),
        "base_rate": round(float(y.mean()), 6) if len(y) else 0.0,
        "roc_auc": round(float(roc_auc_score(y, p)), 6) if both else None,
        "pr_auc": round(float(average_precision_score(y, p)), 6) if both else None,
        "threshold": round(float(threshold), 6),
        "precision": round(precision, 6),
        "recall": round(recall, 6),
        "f1": round(2 * precision * recall / (precision + recall), 6) if tp else 0.0,
        "brier": round(float(brier_score_loss(y, p)), 6),
        "log_loss": round(float(log_loss(y, np.clip(p, 1e-6, 1 - 1e-6), labels=[0, 1])), 6),
        "ece": round(expected_calibration_error(y, p), 6),
        "calibration": calibration_table(y, p),
    }
