"""The feature module: one vector per snapshot, defensive about what it is given."""

from __future__ import annotations

import math

import numpy as np
import pytest

from decisions.runtime.ml.features import (
    ALL_FEATURES,
    FEATURE_SETS,
    Extractor,
    feature_code_version,
    vector,
)


def test_every_model_feature_is_defined() -> None:
    for names in FEATURE_SETS.values():
        assert set(names) <= set(ALL_FEATURES)
        assert len(set(names)) == len(names)


def test_empty_snapshot_gives_the_defaults() -> None:
    ex = Extractor(ALL_FEATURES)
    values = dict(zip(ALL_FEATURES, ex.values({}), strict=True))
    assert all(v == 0.0 for v in values.values())  # never, nothing, no cart: all zero


def test_values_and_transforms() -> None:
    snapshot = {
        "cart_value": 99.0,
        "session_events": 4,
        "session_product_views": 3,
        "since_add_to_cart": 60.0,
        "since_purchase": -1,
        "days_since_last_purchase": 30.0,
        "order_count": 2,
        "lifetime_value": 300.0,
        "recent_products": ["p1", "p2", "p3"],
    }
    ex = Extractor(["log_cart_value", "has_cart", "recency_add_to_cart", "recency_purchase",
                    "recency_last_purchase", "product_view_share", "avg_order_value",
                    "recent_products", "customer_known"])
    got = ex.values(snapshot, {"tier": "gold"})
    assert got == pytest.approx([math.log1p(99), 1.0, 0.5, 0.0, 0.5, 0.75, math.log1p(150),
                                 3.0, 1.0])


def test_bad_values_count_as_missing() -> None:
    ex = Extractor(["log_cart_value", "recency_search", "recent_categories", "log_order_count"])
    got = ex.values({"cart_value": "lots", "since_search": float("nan"),
                     "recent_categories": "shoes", "order_count": -3})
    assert got == [0.0, 0.0, 0.0, 0.0]


def test_vector_follows_the_model_feature_order() -> None:
    x = vector("churn_risk", {"order_count": 3})
    assert isinstance(x, np.ndarray) and x.shape == (len(FEATURE_SETS["churn_risk"]),)
    assert x[FEATURE_SETS["churn_risk"].index("log_order_count")] == pytest.approx(math.log(4))
    assert x[FEATURE_SETS["churn_risk"].index("has_ordered")] == 1.0


def test_unknown_feature_is_refused() -> None:
    with pytest.raises(KeyError, match="no_such_feature"):
        Extractor(["log_cart_value", "no_such_feature"])


def test_code_version_is_stable() -> None:
    assert feature_code_version() == feature_code_version()
    assert len(feature_code_version()) == 12
