"""The admin: a holdout and frequency caps set in the ruleset's settings form, and the
performance page's uplift table (issue #19)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.testclient import TestClient

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
