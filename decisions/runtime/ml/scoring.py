"""In-process scoring for the worker: active registry versions, compiled, one event at a time.

``Scorer.refresh()`` (cheap: one small query; the worker calls it every few seconds)
notices a promotion or rollback and loads the new version (checksum verified, numpy-only
skops artifact). ``Scorer.score(snapshot, customer)`` returns calibrated probabilities by
model name (rules see them as ``score.purchase_intent`` …) and the versions used, to be
stored with the decision.

Nothing here ever raises into the worker: a model that is missing, fails to load or fails
to score is left out of the result (rules needing it do not fire) and counted in
``decisions_model_score_missing_total{model}``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Engine

# declared with the worker's other metrics (a worker without models exports them too)
from decisions.core.metrics import (
    FEATURE_PSI,
    LOAD_FAILURES,
    MODEL_VERSION,
    SCORE_MISSING,
    SCORE_PSI,
)
from decisions.runtime.ml import registry
from decisions.runtime.ml.artifact import CompiledModel
from decisions.runtime.ml.features import ALL_FEATURES, MODEL_NAMES, Extractor

log = logging.getLogger(__name__)
RETRY_SECONDS = 300.0  # a version that failed to load is tried again after this long

@dataclass
class _Loaded:
    row_id: int
    version: int
    sha256: str
    model: CompiledModel
    columns: np.ndarray  # positions of the model's features in the shared vector


class Scorer:
    """Holds the active version of each model; one per worker process."""

    def __init__(self, engine: Engine, names: Iterable[str] = MODEL_NAMES) -> None:
        self.engine = engine
        self.names = tuple(names)
        self._models: dict[str, _Loaded] = {}
        self._failed: dict[str, tuple[str, float]] = {}  # name -> (sha256, when it failed)
        self._extractor = Extractor(ALL_FEATURES)
        self._index = {n: i for i, n in enumerate(ALL_FEATURES)}
        self._drift_seen: dict[str, Any] = {}
        for name in self.names:
            SCORE_MISSING.labels(name)
            MODEL_VERSION.labels(name).set(0)

    @property
    def versions(self) -> dict[str, int]:
        return {name: m.version for name, m in self._models.items()}

    def refresh(self) -> bool:
        """Follow the registry; returns True when the set of loaded versions changed."""
        try:
            heads = registry.active_heads(self.engine)
        except Exception:  # the database may be briefly away; keep serving
            log.warning("model registry unreachable; keeping the loaded models", exc_info=True)
            return False
        changed = False
        for name in self.names:
            head = heads.get(name)
            current = self._models.get(name)
            if head is None:
                if current is not None:
                    del self._models[name]
                    MODEL_VERSION.labels(name).set(0)
                    changed = True
                continue
            row_id, version, digest = head
            if current is not None and current.sha256 == digest and current.row_id == row_id:
                continue
            failed = self._failed.get(name)
            if failed and failed[0] == digest and time.monotonic() - failed[1] < RETRY_SECONDS:
                continue
            try:
                model = registry.load(self.engine, row_id, digest)
                loaded = self._prepare(row_id, version, digest, model)
            except Exception as exc:  # noqa: BLE001 - a bad version must not stop the worker
                LOAD_FAILURES.labels(name).inc()
                self._failed[name] = (digest, time.monotonic())
                log.error("cannot load model %s version %s: %s", name, version, exc)
                if current is not None:  # the active version is another one now: stop using it
                    del self._models[name]
                    MODEL_VERSION.labels(name).set(0)
                    changed = True
                continue
            self._models[name] = loaded
            self._failed.pop(name, None)
            MODEL_VERSION.labels(name).set(version)
            log.info("scoring %s with version %s", name, version)
            changed = True
        self._export_drift()
        return changed

    def _prepare(self, row_id: int, version: int, digest: str, model: CompiledModel) -> _Loaded:
        unknown = [f for f in model.features if f not in self._index]
        if unknown:
            raise KeyError(f"features this code does not compute: {', '.join(unknown)}")
        columns = np.array([self._index[f] for f in model.features], dtype=np.intp)
        probe = model.predict(np.zeros(len(model.features)))
        if not 0.0 <= probe <= 1.0:
            raise ValueError("model returns values outside [0, 1]")
        return _Loaded(row_id, version, digest, model, columns)

    def _export_drift(self) -> None:
        try:
            drift = registry.last_drift(self.engine)
        except Exception:  # noqa: BLE001 - metrics only
            return
        for name, result in drift.items():
            if name not in self.names or self._drift_seen.get(name) == result:
                continue
            self._drift_seen[name] = result
            SCORE_PSI.labels(name).set(float(result.get("score", 0.0)))
            for feature, value in (result.get("features") or {}).items():
                FEATURE_PSI.labels(name, feature).set(float(value))

    @property
    def empty(self) -> bool:
        """No model loaded: every score would be missing (``count_missing`` counts them)."""
        return not self._models

    def count_missing(self, events: int) -> None:
        """``events`` decided without scores because no model is loaded: counted as
        ``score`` would have, per model, in one update each (the worker counts per batch)."""
        for name in self.names:
            SCORE_MISSING.labels(name).inc(events)

    def score(
        self,
        snapshot: Mapping[str, Any],
        customer: Mapping[str, Any] | None = None,
        names: Iterable[str] | None = None,
    ) -> tuple[dict[str, float], dict[str, int]]:
        """Calibrated probabilities by model name, and the model versions used."""
        wanted = self.names if names is None else tuple(names)
        scores: dict[str, float] = {}
        versions: dict[str, int] = {}
        x: np.ndarray | None = None
        for name in wanted:
            loaded = self._models.get(name)
            if loaded is None:
                SCORE_MISSING.labels(name).inc()
                continue
            try:
                if x is None:
                    x = np.array(self._extractor.values(snapshot, customer), dtype=np.float64)
                value = loaded.model.predict(x[loaded.columns])
                if not 0.0 <= value <= 1.0:
                    raise ValueError(f"score {value!r} outside [0, 1]")
            except Exception:  # never block a decision on a model
                SCORE_MISSING.labels(name).inc()
                log.debug("model %s failed on a snapshot", name, exc_info=True)
                continue
            scores[name] = value
            versions[name] = loaded.version
        return scores, versions
