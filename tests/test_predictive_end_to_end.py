"""A rule on score.purchase_intent, end to end: registry -> Scorer in the worker -> offer.

With no active model the rule never fires; once a trained model is active (no restart),
the same rule fires and the decision records the model version that scored it.
"""

from __future__ import annotations

import redis
from sqlalchemy import Engine, create_engine, text

from decisions.core.db import sqlalchemy_url
from decisions.core.settings import Settings
from decisions.runtime.kafka import Producer, ensure_topics
from decisions.runtime.ml import pipeline
from decisions.runtime.ml.dataset import PURCHASE_INTENT
from decisions.runtime.ml.scoring import Scorer
from decisions.runtime.ml.train import train
from decisions.runtime.offers import active_offers
from rulesets.store import RulesetStore
from tests.helpers import event, minutes, now, running_worker, wait_for
from tests.test_ml_scoring import synthetic_table

RULESET = {
    "name": "intent",
    "rules": [
        {
            "name": "scored-cart",
            "priority": 10,
            "when": {
                "all": [
                    {"field": "event.type", "op": "eq", "value": "add_to_cart"},
                    {"field": "state.cart_items", "op": "gt", "value": 0},
                    {"field": "score.purchase_intent", "op": "between", "value": [0, 1]},
                ]
            },
            "then": [{"discount": {"percent": 7, "code": "INTENT7"}}],
        }
    ],
}


def _cart(user: str) -> dict:
    return event(
        "add_to_cart",
        user,
        now() - minutes(1),
        product_id="p-1",
        price=40.0,
        quantity=1,
        category="shoes",
    )


def test_score_rule_fires_only_with_an_active_model(
    settings: Settings, clean_db: Engine, redis_client: redis.Redis
) -> None:
    RulesetStore(clean_db).import_document(RULESET, "test", "score rule")
    ensure_topics(settings)
    engine = create_engine(sqlalchemy_url(str(settings.database_url)))
    producer = Producer(settings)
    try:
        with running_worker(settings, scorer=Scorer(engine)) as worker:
            producer.send_many(settings.events_topic, [("u-before", _cart("u-before"))])
            wait_for(lambda: worker.stats.batches >= 1 and worker.stats.processed >= 1)
            assert active_offers(redis_client, "u-before", now()) == []  # no model: no fire

            result = train(synthetic_table(), algorithm="logreg")
            outcome = pipeline.register_and_gate(clean_db, result, train_from=None, train_to=None)
            assert outcome.promoted

            def offered() -> list[dict]:
                # keep sending fresh carts until the worker's scorer has picked up the model
                producer.send_many(settings.events_topic, [("u-after", _cart("u-after"))])
                return active_offers(redis_client, "u-after", now())

            offers = wait_for(offered, timeout=30, interval=1.0)
    finally:
        producer.close()
    assert offers[0]["rule"] == "scored-cart"
    assert "score.purchase_intent=" in offers[0]["reason"]
    with clean_db.connect() as conn:
        versions = (
            conn.execute(
                text(
                    "SELECT model_versions FROM decisions"
                    " WHERE user_id = 'u-after' AND kind = 'offer'"
                )
            )
            .scalars()
            .all()
        )
    assert versions and all(v == {PURCHASE_INTENT: 1} for v in versions)
    engine.dispose()
