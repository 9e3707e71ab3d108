"""Population stability index (PSI) of each feature and of the score.

The reference is taken from the training rows when a model is trained (decile edges and
the share of rows in each bin, stored in the registry with the version); the live side is
the last day of archived traffic replayed through the same state and feature code.

``PSI = Σ (live − ref) · ln(live / ref)`` over the bins. Usual reading: below 0.1 stable,
0.1–0.25 worth a look, above 0.25 the population has moved (retrain, or find the bug).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

BINS = 10
EPSILON = 1e-4
WATCH, ALERT = 0.1, 0.25


def bin_edges(values: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Inner edges at the quantiles; ties collapse (a mostly-zero count gets few bins)."""
    if values.size == 0:
        return np.array([], dtype=np.float64)
    qs = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
    return np.unique(qs)


def shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of values per bin: bin i holds edges[i-1] < v <= edges[i]."""
    which = np.searchsorted(edges, values, side="left")
    counts = np.bincount(which, minlength=len(edges) + 1).astype(np.float64)
    return counts / max(values.size, 1)


def psi(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray) -> float:
    e = np.maximum(np.asarray(expected, dtype=np.float64), EPSILON)
    a = np.maximum(np.asarray(actual, dtype=np.float64), EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def _one(values: np.ndarray) -> dict[str, list[float]]:
    edges = bin_edges(values)
    return {"edges": edges.tolist(), "shares": shares(values, edges).tolist()}


def reference(names: Sequence[str], X: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """Bins and shares of each feature column and of the score, from the training rows."""
    return {
        "rows": int(X.shape[0]),
        "features": {name: _one(X[:, i]) for i, name in enumerate(names)},
        "score": _one(scores),
    }


def compare(
    ref: dict[str, Any], names: Sequence[str], X: np.ndarray, scores: np.ndarray,
    depth_dependent: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """PSI of each feature and of the score between ``ref`` and live rows.

    Features in ``depth_dependent`` (lifetime values, which only see the replayed history)
    are reported but do not set the status: their PSI also measures how much history each
    side replayed. A real change in them still shows in the score's PSI.
    """
    out: dict[str, float] = {}
    for i, name in enumerate(names):
        spec = ref.get("features", {}).get(name)
        if spec is None:
            continue
        edges = np.asarray(spec["edges"], dtype=np.float64)
        out[name] = round(psi(spec["shares"], shares(X[:, i], edges)), 6)
    score_spec = ref["score"]
    score_psi = psi(score_spec["shares"], shares(scores, np.asarray(score_spec["edges"])))
    judged = {k: v for k, v in out.items() if k not in depth_dependent}
    worst = max(judged.items(), key=lambda kv: kv[1]) if judged else ("", 0.0)
    return {
        "rows": int(X.shape[0]),
        "score": round(score_psi, 6),
        "features": out,
        "depth_dependent": sorted(k for k in out if k in depth_dependent),
        "worst_feature": {"name": worst[0], "psi": worst[1]},
        "status": status(max(score_psi, worst[1])),
    }


def status(value: float) -> str:
    return "shifted" if value > ALERT else "watch" if value > WATCH else "stable"
