"""Serving: the Scorer follows the registry, never raises, refuses tampered artifacts; drift."""

from __future__ import annotations

import operator

import numpy as np
import pytest
import skops.io as sio
from prometheus_client import REGISTRY
from sklearn.linear_model import LogisticRegression
from sqlalchemy import Engine, text

from decisions.runtime.ml import drift, pipeline, registry
from decisions.runtime.ml.artifact import ModelError, TamperedArtifact, dumps, loads, sha256
from decisions.runtime.ml.dataset import PURCHASE_INTENT, Table
from decisions.runtime.ml.features import ALL_FEATURES, FEATURE_SETS, Extractor
from decisions.runtime.ml.scoring import Scorer
from decisions.runtime.ml.train import TrainResult, train

SNAPSHOT = {"cart_value": 120.0, "cart_items": 2, "cart_lines": 2, "session_events": 9,
            "session_product_views": 5, "since_add_to_cart": 30.0, "since_page_checkout": 10.0,
            "count_add_to_cart_1h": 2, "order_count": 1, "recent_products": ["p1", "p2"]}


def metric(name: str, model: str) -> float:
    return REGISTRY.get_sample_value(name, {"model": model}) or 0.0


def synthetic_table(seed: int = 0, n: int = 3000) -> Table:
    """Rows over every feature; the purchase odds rise with the cart and checkout recency."""
    rng = np.random.default_rng(seed)
    X = rng.gamma(1.0, 1.0, size=(n, len(ALL_FEATURES)))
    col = {name: i for i, name in enumerate(ALL_FEATURES)}
    z = -2.0 + 1.2 * X[:, col["log_cart_value"]] + 2.0 * X[:, col["recency_page_checkout"]]
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int8)
    return Table(PURCHASE_INTENT, X, y, np.arange(n, dtype=np.float64) * 60.0)


@pytest.fixture(scope="module")
def trained() -> TrainResult:
    return train(synthetic_table(), algorithm="logreg")


def test_no_model_means_no_score_and_a_count(clean_db: Engine) -> None:
    scorer = Scorer(clean_db)
    assert scorer.refresh() is False
    before = metric("decisions_model_score_missing_total", "churn_risk")
    scores, versions = scorer.score(SNAPSHOT, {})
    assert scores == {} and versions == {}
    assert metric("decisions_model_score_missing_total", "churn_risk") == before + 1


def test_scores_with_the_active_version_and_follows_rollback(
    clean_db: Engine, trained: TrainResult
) -> None:
    pipeline.register_and_gate(clean_db, trained, train_from=None, train_to=None)
    scorer = Scorer(clean_db)
    assert scorer.refresh() is True
    assert scorer.refresh() is False  # nothing changed: nothing reloaded
    scores, versions = scorer.score(SNAPSHOT, {"tier": "gold"})
    assert versions == {PURCHASE_INTENT: 1}
    expected = trained.model.predict(Extractor(trained.model.features).vector(SNAPSHOT, {"a": 1}))
    assert scores[PURCHASE_INTENT] == pytest.approx(expected)
    assert 0.0 <= scores[PURCHASE_INTENT] <= 1.0
    assert "churn_risk" not in scores  # no churn model: left out, not made up
    assert metric("decisions_model_active_version", PURCHASE_INTENT) == 1

    other = train(synthetic_table(seed=1), algorithm="hgb")
    pipeline.register_and_gate(clean_db, other, train_from=None, train_to=None, force=True)
    assert scorer.refresh() is True
    assert scorer.score(SNAPSHOT)[1] == {PURCHASE_INTENT: 2}
    pipeline.rollback(clean_db, PURCHASE_INTENT)
    scorer.refresh()
    assert scorer.score(SNAPSHOT)[1] == {PURCHASE_INTENT: 1}
    registry.deactivate(clean_db, PURCHASE_INTENT)
    scorer.refresh()
    assert scorer.score(SNAPSHOT) == ({}, {})


def test_score_survives_a_garbage_snapshot(clean_db: Engine, trained: TrainResult) -> None:
    pipeline.register_and_gate(clean_db, trained, train_from=None, train_to=None)
    scorer = Scorer(clean_db)
    scorer.refresh()
    scores, _ = scorer.score({"cart_value": "NaN", "recent_products": None, "since_search": {}})
    assert 0.0 <= scores[PURCHASE_INTENT] <= 1.0


def test_tampered_artifact_is_refused(clean_db: Engine, trained: TrainResult) -> None:
    outcome = pipeline.register_and_gate(clean_db, trained, train_from=None, train_to=None)
    with clean_db.begin() as conn:  # flip one byte of the stored artifact
        conn.execute(
            text("UPDATE model_versions SET artifact = set_byte(artifact, 200, "
                 "get_byte(artifact, 200) # 1) WHERE id = :id"),
            {"id": outcome.version.id},
        )
    with pytest.raises(TamperedArtifact, match="checksum mismatch"):
        registry.load(clean_db, outcome.version.id)

    failures = metric("decisions_model_load_failures_total", PURCHASE_INTENT)
    missing = metric("decisions_model_score_missing_total", PURCHASE_INTENT)
    scorer = Scorer(clean_db)
    scorer.refresh()
    scorer.refresh()  # a failed artifact is not retried on every refresh
    assert scorer.score(SNAPSHOT) == ({}, {})  # decisions go on without the score
    assert metric("decisions_model_load_failures_total", PURCHASE_INTENT) == failures + 1
    assert metric("decisions_model_score_missing_total", PURCHASE_INTENT) == missing + 1


def test_artifact_with_code_bearing_types_is_refused_even_with_a_good_checksum() -> None:
    data = sio.dumps({"format": 1, "hook": operator.attrgetter("__class__")})
    with pytest.raises(TamperedArtifact, match=r"not allowed: operator\.attrgetter"):
        loads(data, sha256(data))


def test_artifact_of_another_shape_is_refused() -> None:
    estimator = LogisticRegression().fit(np.array([[0.0], [1.0]]), [0, 1])
    data = sio.dumps({"format": 1, "estimator": estimator})  # skops trusts sklearn types
    with pytest.raises(ModelError, match="expected structure"):
        loads(data, sha256(data))


def test_artifact_round_trip(trained: TrainResult) -> None:
    data = dumps(trained.model)
    model = loads(data, sha256(data))
    x = Extractor(FEATURE_SETS[PURCHASE_INTENT]).vector(SNAPSHOT)
    assert model.predict(x) == trained.model.predict(x)
    assert model.threshold == trained.model.threshold


def test_psi_is_small_for_the_same_population_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(0, 1, size=(20_000, 2))
    ref = drift.reference(["a", "b"], base, rng.random(20_000))
    same = drift.compare(ref, ["a", "b"], rng.normal(0, 1, size=(5_000, 2)), rng.random(5_000))
    assert same["features"]["a"] < 0.02 and same["score"] < 0.02
    assert same["status"] == "stable"
    moved = rng.normal(0, 1, size=(5_000, 2))
    moved[:, 1] += 1.0  # feature b shifts by one standard deviation
    shifted = drift.compare(ref, ["a", "b"], moved, rng.random(5_000) ** 3)
    assert shifted["features"]["a"] < 0.02
    assert shifted["features"]["b"] > 0.25
    assert shifted["score"] > 0.25
    assert shifted["worst_feature"]["name"] == "b" and shifted["status"] == "shifted"


def test_psi_with_a_mostly_constant_feature() -> None:
    values = np.zeros(1000)
    values[:50] = 3.0
    ref = drift.reference(["c"], values.reshape(-1, 1), np.linspace(0, 1, 1000))
    assert len(ref["features"]["c"]["edges"]) <= 2  # ties collapse the deciles
    live = np.zeros((1000, 1))
    result = drift.compare(ref, ["c"], live, np.linspace(0, 1, 1000))
    assert result["features"]["c"] > 0.1  # the 5% non-zero rows vanished


def test_lifetime_features_are_reported_apart() -> None:
    rng = np.random.default_rng(5)
    ref = drift.reference(["age", "b"], rng.normal(0, 1, size=(5_000, 2)), rng.random(5_000))
    live = rng.normal(0, 1, size=(2_000, 2))
    live[:, 0] += 2.0  # only the lifetime feature moved (e.g. a shorter replay)
    result = drift.compare(ref, ["age", "b"], live, rng.random(2_000),
                           depth_dependent=frozenset({"age"}))
    assert result["features"]["age"] > 0.25 and result["depth_dependent"] == ["age"]
    assert result["status"] == "stable" and result["worst_feature"]["name"] == "b"
