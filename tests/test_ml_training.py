"""Training from history in PostgreSQL, the registry's promotion gate, rollback and drift."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
import redis
from prometheus_client import REGISTRY
from sqlalchemy import Engine

from decisions.core.errors import Conflict
from decisions.core.events import Event
from decisions.runtime import state
from decisions.runtime.archive import EventArchive
from decisions.runtime.ml import pipeline, registry
from decisions.runtime.ml.dataset import CHURN_RISK, PURCHASE_INTENT, Table, build_table
from decisions.runtime.ml.scoring import Scorer
from decisions.runtime.ml.synthetic import generate
from decisions.runtime.ml.train import time_split, train

WEAK = ("customer_known", "log_days_since_first_seen", "recent_products")


@pytest.fixture(scope="module")
def history() -> tuple[list[Event], Any]:
    return generate(users=260, days=20, seed=7)


@pytest.fixture(scope="module")
def client(services: dict[str, str]) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(services["redis_url"])
    yield c
    c.close()


@pytest.fixture(scope="module")
def tables(engine: Engine, client: redis.Redis, history: Any) -> dict[str, Table]:
    """Both models' tables, replayed once from the archive (later tests reuse them)."""
    events, _ = history
    snapshots = list(state.replay(events, client, "test-tables:"))
    state.clear_scratch(client, "test-tables:")
    start, end = events[0].ts, events[-1].ts
    return {
        PURCHASE_INTENT: build_table(PURCHASE_INTENT, snapshots, start, end),
        CHURN_RISK: build_table(CHURN_RISK, snapshots, start, end, churn_days=3),
    }


def test_purchase_labels_follow_the_history(tables: dict[str, Table], history: Any) -> None:
    events, truth = history
    table = tables[PURCHASE_INTENT]
    non_purchase = sum(e.type != "purchase" for e in events)
    assert 0.9 * non_purchase <= len(table) <= non_purchase  # a few open sessions at the end
    assert 0 < table.y.mean() < 0.6
    # a session's last browsing event is positive exactly when that session bought
    assert table.info["positives"] == int(table.y.sum())
    assert len(truth.session_p) > 100


def test_train_on_history_and_register(
    clean_db: Engine, tables: dict[str, Table], client: redis.Redis
) -> None:
    result = train(tables[PURCHASE_INTENT], embargo_seconds=1800)
    holdout = result.metrics["holdout"]
    assert holdout["roc_auc"] > 0.75  # the generator's behaviour is learnable
    for key in ("pr_auc", "precision", "recall", "threshold", "brier", "ece", "calibration"):
        assert key in holdout
    assert set(result.metrics["candidates"]) == {"logreg", "hgb"}
    assert result.holdout.ts.min() > tables[PURCHASE_INTENT].ts.min()

    outcome = pipeline.register_and_gate(clean_db, result, train_from=None, train_to=None)
    assert outcome.promoted and outcome.version.version == 1 and outcome.version.active
    info, model = registry.load_version(clean_db, PURCHASE_INTENT)
    assert info.features == list(model.features)
    assert "features:" in info.code_version
    x = result.holdout.columns(model.features)
    assert np.allclose(model.predict_batch(x), result.model.predict_batch(x))


def test_train_from_archive_end_to_end(
    clean_db: Engine, client: redis.Redis, history: Any
) -> None:
    events, _ = history
    EventArchive(clean_db).write_batch(events)
    start, end = events[-1].ts - timedelta(days=4), events[-1].ts
    outcome = pipeline.train_from_archive(clean_db, client, PURCHASE_INTENT, start, end,
                                          algorithm="hgb", warmup_days=0.5)
    assert outcome.promoted
    assert outcome.version.algorithm == "hgb"
    assert outcome.version.train_from == start and outcome.version.train_to == end
    assert outcome.version.metrics["holdout"]["roc_auc"] > 0.75
    assert not client.keys("d:*{train-*")  # the replay's scratch state is gone


def test_churn_labels_and_training(tables: dict[str, Table]) -> None:
    table = tables[CHURN_RISK]
    assert table.info["dropped_unknown_outcome"] > 0  # the last 3 days cannot be known yet
    assert table.ts.max() <= table.ts.min() + 20 * 86400
    split = time_split(table, embargo_seconds=3 * 86400)
    learnt = np.concatenate([split.fit.ts, split.calibration.ts])
    assert learnt.max() < split.holdout.ts.min() - 3 * 86400  # no label looks into the holdout
    assert split.fit.ts.max() <= split.calibration.ts.min()
    result = train(table, algorithm="logreg", embargo_seconds=3 * 86400)
    assert result.metrics["holdout"]["roc_auc"] > 0.6


def test_gate_refuses_a_worse_model(clean_db: Engine, tables: dict[str, Table]) -> None:
    table = tables[PURCHASE_INTENT]
    good = pipeline.register_and_gate(clean_db, train(table, algorithm="logreg"),
                                      train_from=None, train_to=None)
    assert good.promoted
    worse = pipeline.register_and_gate(
        clean_db, train(table, algorithm="logreg", features=WEAK), train_from=None, train_to=None
    )
    assert not worse.promoted and not worse.gate["passed"]
    assert worse.gate["against"] == 1
    assert worse.gate["candidate_roc_auc"] < worse.gate["active_roc_auc"]
    assert registry.get(clean_db, PURCHASE_INTENT).version == 1

    with pytest.raises(Conflict, match="no passing gate"):
        pipeline.promote(clean_db, PURCHASE_INTENT, 2)
    assert pipeline.promote(clean_db, PURCHASE_INTENT, 2, force=True).active
    assert registry.get(clean_db, PURCHASE_INTENT).version == 2
    assert pipeline.rollback(clean_db, PURCHASE_INTENT).version == 1
    assert [v.active for v in registry.versions(clean_db, PURCHASE_INTENT)] == [True, False]


def test_gate_lets_an_equal_or_better_model_through(
    clean_db: Engine, tables: dict[str, Table]
) -> None:
    table = tables[PURCHASE_INTENT]
    weak = pipeline.register_and_gate(clean_db, train(table, algorithm="logreg", features=WEAK),
                                      train_from=None, train_to=None)
    assert weak.promoted and weak.gate["reason"] == "no active version"
    better = pipeline.register_and_gate(clean_db, train(table, algorithm="logreg"),
                                        train_from=None, train_to=None)
    assert better.promoted and better.gate["passed"] and better.gate["against"] == 1
    same = pipeline.register_and_gate(clean_db, train(table, algorithm="logreg"),
                                      train_from=None, train_to=None)
    assert same.promoted  # identical figures are "not worse"


def test_too_little_history_is_a_clear_error(tables: dict[str, Table]) -> None:
    table = tables[PURCHASE_INTENT]
    tiny = table.subset(np.arange(len(table)) < 150)
    with pytest.raises(Exception, match="not enough data to train purchase_intent"):
        train(tiny)


def test_drift_on_live_traffic(
    clean_db: Engine, client: redis.Redis, tables: dict[str, Table], history: Any
) -> None:
    events, _ = history
    EventArchive(clean_db).write_batch(events)
    pipeline.register_and_gate(clean_db, train(tables[PURCHASE_INTENT], algorithm="logreg"),
                               train_from=None, train_to=None)
    end = events[-1].ts + timedelta(seconds=1)
    result = pipeline.check_drift(clean_db, client, PURCHASE_INTENT, end=end, warmup_days=21)
    assert result["rows"] > 100
    assert result["score"] < 0.25  # same generator, same population
    assert set(result["features"]) == set(registry.load_version(clean_db, PURCHASE_INTENT)[1]
                                          .features)
    assert registry.last_drift(clean_db)[PURCHASE_INTENT]["rows"] == result["rows"]
    Scorer(clean_db).refresh()  # workers export the last drift result as metrics
    labels = {"model": PURCHASE_INTENT}
    assert REGISTRY.get_sample_value("decisions_model_score_psi", labels) == result["score"]
    feature, value = next(iter(result["features"].items()))
    assert REGISTRY.get_sample_value(
        "decisions_model_feature_psi", {**labels, "feature": feature}
    ) == value
