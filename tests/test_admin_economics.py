"""The admin: a holdout, frequency caps and a budget set in the ruleset's settings form,
the performance page's uplift table and what is left of the budgets (issue #19)."""

from __future__ import annotations

from collections.abc import Callable

import redis
from starlette.testclient import TestClient

from decisions.runtime.budgets import BudgetStore
from rulesets.budget import Budget
from rulesets.store import RulesetStore
from tests.test_admin_fixtures import *  # noqa: F403 - fixtures
from tests.test_admin_fixtures import post


def test_holdout_and_caps_from_the_settings_form_reach_the_draft_and_the_report(
        signed_in: Callable[[str], tuple[TestClient, str]], starter: RulesetStore) -> None:
    client, token = signed_in("editor")
    assert 'name="caps.per_day"' in client.get("/rulesets/storefront").text  # none set yet
    saved = post(client, "/rulesets/storefront/settings", token, revision="",
                 base_version="1", description="Starter", **{
                     "holdout.percent": "10", "holdout.experiment": "sf-2026-12",
                     "caps.per_day": "1", "caps.per_week": "3"})
    assert saved.status_code == 303
    draft = starter.draft("storefront")
    assert draft is not None
    assert draft.document["holdout"] == {"share": 0.1, "experiment": "sf-2026-12"}
    assert draft.document["caps"] == {"per_day": 1, "per_week": 3}
    page = client.get("/rulesets/storefront").text
    assert 'name="holdout.percent"' in page and 'value="10.0"' in page
    # a bad share is named, and nothing is saved
    bad = post(client, "/rulesets/storefront/settings", token, revision=str(draft.revision),
               base_version="1", **{"holdout.percent": "80"})
    assert "holdout.share" in client.get(bad.headers["location"]).text
    # the draft's experiment is on the performance page (no decisions yet)
    perf = client.get("/rulesets/storefront/performance").text
    assert "whole ruleset · sf-2026-12" in perf and "not enough data yet" in perf
    # clearing the fields removes them
    post(client, "/rulesets/storefront/settings", token, revision=str(draft.revision),
         base_version="1")
    draft = starter.draft("storefront")
    assert draft is not None and "holdout" not in draft.document and "caps" not in draft.document


def test_a_budget_from_the_settings_form_and_what_is_left_of_it(
        signed_in: Callable[[str], tuple[TestClient, str]], starter: RulesetStore,
        redis_client: redis.Redis) -> None:
    client, token = signed_in("editor")
    page = client.get("/rulesets/storefront").text
    assert 'name="budget.amount"' in page and "Budgets</h2>" not in page  # none set yet
    saved = post(client, "/rulesets/storefront/settings", token, revision="",
                 base_version="1", description="Starter", **{
                     "budget.amount": "10000", "budget.grants": "3",
                     "budget.campaign": "xmas-2026"})
    assert saved.status_code == 303
    draft = starter.draft("storefront")
    assert draft is not None
    assert draft.document["budget"] == {"amount": 10000, "grants": 3, "campaign": "xmas-2026"}
    bad = post(client, "/rulesets/storefront/settings", token, revision=str(draft.revision),
               base_version="1", **{"budget.grants": "0.5"})
    assert "budget.grants" in client.get(bad.headers["location"]).text
    # published, two offers granted: what is left shows on the ruleset and performance pages
    starter.import_document(draft.document, "test", "test")
    store = BudgetStore(redis_client)
    budget = (Budget("xmas-2026", 1_000_000, 3),)
    for offer in ("a", "b"):
        assert store.reserve("storefront", offer, 2500, budget, 1_800_000_000_000) == "ok"
    for path in ("/rulesets/storefront", "/rulesets/storefront/performance"):
        html = client.get(path).text
        assert "Budgets</h2>" in html and "xmas-2026" in html, path
        assert "1 of 3" in html and "$9,950.00 of $10,000.00" in html, path
    store.reserve("storefront", "c", 2500, budget, 1_800_000_000_000)
    assert "spent: grants nothing until raised" in client.get("/rulesets/storefront").text
