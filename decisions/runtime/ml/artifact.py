"""Model artifacts: a compiled, numpy-only form of a trained model, stored with skops.

Training turns the scikit-learn estimator into plain arrays (a linear model's weights, or
the flattened trees of a gradient-boosting model) plus its calibration map. That form is

* what is served: one event is scored in microseconds with a few numpy operations, where
  scikit-learn's single-row ``predict_proba`` takes 0.3–0.9 ms;
* what is evaluated, so the holdout figures describe exactly the served model;
* safe to load: the skops file holds only numpy arrays and builtins; loading refuses any
  other type, and the registry's SHA-256 is checked before skops even parses the bytes.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from decisions.core.errors import DecisionsError

FORMAT = 1


class ModelError(DecisionsError):
    code = "model_error"


class TamperedArtifact(ModelError):
    code = "tampered_artifact"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class CompiledModel:
    """A calibrated binary classifier over a fixed, named feature vector."""

    name: str
    features: tuple[str, ...]
    kind: str  # "linear" | "trees"
    arrays: dict[str, np.ndarray]
    calibration: dict[str, Any]  # {"method": "isotonic", "x": [...], "y": [...]} or sigmoid a, b
    threshold: float = 0.5
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        a = self.arrays
        if self.kind == "linear":
            self._w = np.ascontiguousarray(a["coef"], dtype=np.float64)
            self._b = float(a["intercept"][0])
        elif self.kind == "trees":
            self._feat = a["feature"].astype(np.intp)
            self._thr = a["threshold"].astype(np.float64)
            self._left = a["left"].astype(np.intp)
            self._right = a["right"].astype(np.intp)
            self._mleft = a["missing_left"].astype(bool)
            leaf = self._left == self._right
            self._adjacent = bool(np.all(leaf | (self._right == self._left + 1)))
            self._value = a["value"].astype(np.float64)
            self._roots = a["roots"].astype(np.intp)
            self._depth = int(a["depth"][0])
            self._base = float(a["base"][0])
        else:
            raise ModelError(f"unknown model kind {self.kind!r}")
        cal = self.calibration
        if cal["method"] == "isotonic":
            self._cx = np.asarray(cal["x"], dtype=np.float64)
            self._cy = np.asarray(cal["y"], dtype=np.float64)
        elif cal["method"] == "sigmoid":
            self._ca, self._cb = float(cal["a"]), float(cal["b"])
        else:
            raise ModelError(f"unknown calibration {cal['method']!r}")

    # -- one row (serving) ---------------------------------------------------------------
    def raw(self, x: np.ndarray) -> float:
        if self.kind == "linear":
            return float(self._w @ x) + self._b
        # decide every node at once (a few vector operations over all nodes), then walk:
        # one gather per level instead of seven
        v = x.take(self._feat)
        if self._adjacent and not np.isnan(x).any():
            child = self._left + (v > self._thr)
        else:
            go_left = (v <= self._thr) | (np.isnan(v) & self._mleft)
            child = np.where(go_left, self._left, self._right)
        idx = self._roots
        for _ in range(self._depth):
            idx = child[idx]
        return self._base + float(self._value[idx].sum())

    def predict(self, x: np.ndarray) -> float:
        return self.calibrate(self.raw(x))

    def calibrate(self, raw: float) -> float:
        if self.calibration["method"] == "isotonic":
            return float(np.interp(raw, self._cx, self._cy))
        z = self._ca * raw + self._cb
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    # -- many rows (training, evaluation, drift) -----------------------------------------
    def raw_batch(self, X: np.ndarray, chunk: int = 4096) -> np.ndarray:
        if self.kind == "linear":
            return np.asarray(X @ self._w + self._b, dtype=np.float64)
        out = np.empty(X.shape[0], dtype=np.float64)
        for lo in range(0, X.shape[0], chunk):
            part = X[lo : lo + chunk]
            rows = np.arange(part.shape[0])[:, None]
            idx = np.broadcast_to(self._roots, (part.shape[0], self._roots.shape[0]))
            for _ in range(self._depth):
                v = part[rows, self._feat[idx]]
                go_left = (v <= self._thr[idx]) | (np.isnan(v) & self._mleft[idx])
                idx = np.where(go_left, self._left[idx], self._right[idx])
            out[lo : lo + chunk] = self._base + self._value[idx].sum(axis=1)
        return out

    def calibrate_batch(self, raw: np.ndarray) -> np.ndarray:
        if self.calibration["method"] == "isotonic":
            return np.interp(raw, self._cx, self._cy)
        z = np.clip(self._ca * raw + self._cb, -700, 700)
        return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float64)

    def predict_batch(self, X: np.ndarray) -> np.ndarray:
        return self.calibrate_batch(self.raw_batch(X))


# -- compiling scikit-learn estimators ------------------------------------------------
def linear_arrays(coef: np.ndarray, intercept: float, mean: np.ndarray | None = None,
                  scale: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Fold a StandardScaler (mean, scale) into the weights of a linear model."""
    w = np.asarray(coef, dtype=np.float64).ravel()
    b = float(intercept)
    if mean is not None and scale is not None:
        w = w / scale
        b = b - float(w @ mean)
    return {"coef": w, "intercept": np.array([b])}


def tree_arrays(estimator: Any) -> dict[str, np.ndarray]:
    """Flatten a fitted binary HistGradientBoostingClassifier into global node arrays.

    Nodes are renumbered breadth-first so that a node's right child always follows its
    left child (``right == left + 1``): one row then walks with ``left + (x > threshold)``.
    Leaves point at themselves (threshold +inf), so every tree can be walked for the same
    number of steps (the deepest tree's depth) with no per-tree branching.
    """
    predictors = [iteration[0] for iteration in estimator._predictors]
    feats, thrs, lefts, rights, mlefts, values, roots = [], [], [], [], [], [], []
    offset, depth = 0, 0
    for predictor in predictors:
        nodes = predictor.nodes
        if nodes["is_categorical"].any():
            raise ModelError("categorical splits are not supported by the compiled form")
        order, new_id = _breadth_first(nodes)
        n = len(order)
        leaf = nodes["is_leaf"][order].astype(bool)
        own = np.arange(offset, offset + n)
        left = new_id[nodes["left"][order].astype(np.int64)] + offset
        right = new_id[nodes["right"][order].astype(np.int64)] + offset
        feats.append(np.where(leaf, 0, nodes["feature_idx"][order]))
        thrs.append(np.where(leaf, np.inf, nodes["num_threshold"][order]))
        lefts.append(np.where(leaf, own, left))
        rights.append(np.where(leaf, own, right))
        mlefts.append(np.where(leaf, True, nodes["missing_go_to_left"][order].astype(bool)))
        values.append(np.where(leaf, nodes["value"][order], 0.0))
        roots.append(offset)
        depth = max(depth, int(nodes["depth"].max()))
        offset += n
    return {
        "feature": np.concatenate(feats).astype(np.int64),
        "threshold": np.concatenate(thrs).astype(np.float64),
        "left": np.concatenate(lefts).astype(np.int64),
        "right": np.concatenate(rights).astype(np.int64),
        "missing_left": np.concatenate(mlefts).astype(np.int8),
        "value": np.concatenate(values).astype(np.float64),
        "roots": np.array(roots, dtype=np.int64),
        "depth": np.array([depth], dtype=np.int64),
        "base": np.array([float(np.ravel(estimator._baseline_prediction)[0])]),
    }


def _breadth_first(nodes: np.ndarray) -> tuple[list[int], np.ndarray]:
    """Old node ids in the new order, and the new id of each old id (children adjacent)."""
    new_id = np.zeros(nodes.shape[0], dtype=np.int64)
    order = [0]
    i = 0
    while i < len(order):
        old = order[i]
        if not nodes["is_leaf"][old]:
            for child in (int(nodes["left"][old]), int(nodes["right"][old])):
                new_id[child] = len(order)
                order.append(child)
        i += 1
    return order, new_id


# -- storing --------------------------------------------------------------------------
def _skops() -> Any:
    """skops.io, imported on first use: its import enumerates scikit-learn (seconds), which
    the worker should pay only when it loads a model, not when it imports the scorer."""
    import skops.io

    return skops.io


def dumps(model: CompiledModel) -> bytes:
    doc = {
        "format": FORMAT,
        "name": model.name,
        "features": list(model.features),
        "kind": model.kind,
        "arrays": model.arrays,
        "calibration": {
            k: (np.asarray(v, dtype=np.float64) if isinstance(v, list | np.ndarray) else v)
            for k, v in model.calibration.items()
        },
        "threshold": float(model.threshold),
        "meta": model.meta,
    }
    return bytes(_skops().dumps(doc))


def loads(data: bytes, expected_sha256: str) -> CompiledModel:
    """Verify the checksum, refuse any non-builtin type, then load."""
    actual = sha256(data)
    if actual != expected_sha256:
        raise TamperedArtifact(
            f"model artifact checksum mismatch (expected {expected_sha256[:12]}…, "
            f"got {actual[:12]}…): refusing to load it"
        )
    sio = _skops()
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:  # noqa: BLE001 - skops raises several types for bad input
        raise TamperedArtifact(f"model artifact is not a readable skops file: {exc}") from None
    if untrusted:
        raise TamperedArtifact(
            f"model artifact holds types that are not allowed: {', '.join(untrusted)}"
        )
    doc = sio.loads(data, trusted=[])
    try:
        return _from_doc(doc)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ModelError(f"model artifact does not have the expected structure: {exc!r}") from None


def _from_doc(doc: Any) -> CompiledModel:
    """Only plain data is accepted: every array must be a numeric numpy array."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ModelError("model artifact has an unknown format")
    arrays = doc["arrays"]
    if not isinstance(arrays, dict) or not all(
        isinstance(v, np.ndarray) and v.dtype.kind in "biuf" for v in arrays.values()
    ):
        raise ModelError("model artifact arrays must be numeric numpy arrays")
    cal = {
        k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in doc["calibration"].items()
    }
    return CompiledModel(
        name=str(doc["name"]),
        features=tuple(str(f) for f in doc["features"]),
        kind=str(doc["kind"]),
        arrays=dict(arrays),
        calibration=cal,
        threshold=float(doc["threshold"]),
        meta=dict(doc.get("meta") or {}),
    )
