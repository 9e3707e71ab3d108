"""Every admin page renders (in the layout), with escaped rule content."""

from __future__ import annotations

from collections.abc import Callable

from starlette.testclient import TestClient

from rulesets.store import RulesetStore
from tests.test_admin_fixtures import *  # noqa: F403 - fixtures

SignIn = Callable[[str], tuple[TestClient, str]]


def test_every_page_renders(signed_in: SignIn, starter: RulesetStore) -> None:
    client, _ = signed_in("admin")
    for path in ("/", "/rulesets/storefront", "/rulesets/storefront/rules/0",
                 "/rulesets/storefront/rules/new", "/new-ruleset", "/rulesets/storefront/try",
                 "/rulesets/storefront/backtest", "/rulesets/storefront/history",
                 "/rulesets/storefront/diff?a=1&b=1", "/rulesets/storefront/performance",
                 "/audit", "/audit?user=seed&ruleset=storefront&from=2020-01-01&to=2099-01-01"):
        response = client.get(path)
        assert response.status_code == 200, (path, response.text[:2000])
        assert "Sign out" in response.text, path
