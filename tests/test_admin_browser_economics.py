"""A marketer sets a budget and a holdout in the ruleset's settings form, in headless
Chromium against a served admin (issue #19): saved to the draft, seen in the change list
and the source diff, published, and what is left of the budget shown on the ruleset page.
Screenshots go to ``var/screenshots/`` (``20-...``)."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from sqlalchemy import Engine

from rulesets.store import RulesetStore
from tests.test_admin_browser import browser, served, shot, sign_in  # noqa: F401 - fixtures

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


def test_budget_and_holdout_from_the_settings_form(
        browser: Any, served: str, clean_db: Engine,  # noqa: F811 - fixtures
        redis_client: redis.Redis) -> None:
    base = served
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    sign_in(page, base, "maria")
    page.goto(base + "/rulesets/storefront")
    page.get_by_text("Ruleset settings").click()
    page.get_by_label("Hold out (% of eligible shoppers").fill("10")
    page.get_by_label("Experiment name").fill("winback-2026-12")
    page.get_by_label("Discount budget, in total").fill("10000")
    page.get_by_label("At most this many offers, in total").fill("500")
    page.get_by_label("Budget campaign").fill("winter-2026")
    shot(page, "20-economics-settings-form")
    page.get_by_role("button", name="Save settings to the draft").click()
    page.wait_for_url(base + "/rulesets/storefront")
    expect(page.get_by_text("Settings saved")).to_be_visible()
    # the draft holds them, and the pending draft's change list names them
    draft = RulesetStore(clean_db).draft("storefront")
    assert draft is not None
    assert draft.document["budget"] == {"amount": 10000, "grants": 500,
                                        "campaign": "winter-2026"}
    assert draft.document["holdout"] == {"share": 0.1, "experiment": "winback-2026-12"}
    summary = page.locator("ul.summary").inner_text()
    assert 'budget: (none) → {"amount": 10000, "grants": 500, "campaign": "winter-2026"}' \
        in summary
    assert 'holdout: (none) → {"share": 0.1, "experiment": "winback-2026-12"}' in summary
    # the form shows what was saved
    page.get_by_text("Ruleset settings").click()
    expect(page.get_by_label("Discount budget, in total")).to_have_value("10000")
    expect(page.get_by_label("Hold out (% of eligible shoppers")).to_have_value("10.0")
    shot(page, "21-economics-draft")
    # the source, side by side with version 1
    page.get_by_role("link", name="See the changes side by side").click()
    source = page.locator("main").inner_text()
    for line in ("budget:", "amount: 10000", "grants: 500", "campaign: winter-2026",
                 "holdout:", "share: 0.1", "experiment: winback-2026-12"):
        assert line in source, line
    shot(page, "22-economics-source-diff")
    # published by a publisher: the ruleset page shows the budget, all of it left
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, base, "paul")
    page.goto(base + "/rulesets/storefront")
    page.get_by_label("Comment").fill("Winter budget and a holdout")
    page.get_by_role("button", name="Publish draft").click()
    expect(page.get_by_text("Published storefront version 2")).to_be_visible()
    page.goto(base + "/rulesets/storefront")
    budgets = page.locator("section.budgets")
    expect(budgets).to_contain_text("winter-2026")
    expect(budgets).to_contain_text("$10,000.00 of $10,000.00")
    expect(budgets).to_contain_text("500 of 500")
    expect(budgets).to_contain_text("granting")
    shot(page, "23-economics-budget-left")
    context.close()
