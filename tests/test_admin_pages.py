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
                 "/audit", "/audit?user=seed&ruleset=storefront&from=2020-01-01&to=2099-01-01",
                 "/audit/1", "/audit/2", "/users"):
        response = client.get(path)
        assert response.status_code == 200, (path, response.text[:2000])
        assert "Sign out" in response.text, path
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert response.headers["x-frame-options"] == "DENY"


def test_works_mounted_under_a_prefix(admin_settings, admin_users, starter) -> None:
    """``decisions up`` mounts the admin at /admin inside the storefront API."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from admin.app import create_app
    from tests.test_admin_fixtures import csrf_of, password

    admin = create_app(admin_settings)
    host = Starlette(routes=[Mount("/admin", app=admin, name="admin")])
    try:
        with TestClient(host, follow_redirects=False) as client:
            first = client.get("/admin/rulesets/storefront")
            assert first.status_code == 303
            assert first.headers["location"] == "/admin/login?next=/admin/rulesets/storefront"
            page = client.get("/admin/login")
            assert 'href="/admin/static/admin.css"' in page.text
            assert client.get("/admin/static/admin.css").status_code == 200
            signed = client.post("/admin/login", data={
                "username": "viewer", "password": password("viewer"),
                "csrf_token": csrf_of(page.text), "next": "/admin/rulesets/storefront"})
            assert signed.headers["location"] == "/admin/rulesets/storefront"
            html = client.get("/admin/rulesets/storefront").text
            assert 'href="/admin/rulesets/storefront/history"' in html
            assert 'action="/admin/logout"' in html
    finally:
        admin.state.admin.close()


def test_unreachable_redis_is_a_503_page(admin_settings, admin_users) -> None:
    from dataclasses import replace

    from admin.app import create_app
    from decisions.cli.stack.process import free_port
    from tests.test_admin_fixtures import csrf_of

    app = create_app(replace(admin_settings, redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    try:
        with TestClient(app, follow_redirects=False) as client:
            page = client.get("/login")
            response = client.post("/login", data={"username": "viewer", "password": "x",
                                                   "csrf_token": csrf_of(page.text)})
            assert response.status_code == 503 and "Redis cannot be reached" in response.text
    finally:
        app.state.admin.close()


def test_mounted_in_the_storefront_api(admin_settings, admin_users, starter) -> None:
    """As ``decisions up`` serves it: inside the API app, whose lifespan is the only one."""
    from starlette.routing import Mount

    from admin.app import create_app
    from api.app import create_app as create_api
    from tests.test_admin_fixtures import csrf_of, password

    admin = create_app(admin_settings)
    api = create_api(admin_settings, extra_routes=[Mount("/admin", app=admin, name="admin")])
    try:
        with TestClient(api, follow_redirects=False) as client:
            assert client.get("/healthz").status_code == 200
            page = client.get("/admin/login")
            assert page.status_code == 200
            signed = client.post("/admin/login", data={
                "username": "editor", "password": password("editor"),
                "csrf_token": csrf_of(page.text)})
            assert signed.headers["location"] == "/admin/"
            html = client.get("/admin/rulesets/storefront").text
            assert 'href="/admin/rulesets/storefront/rules/0"' in html
            missing = client.get("/admin/no/such/page")
            assert missing.status_code == 404 and "Not found" in missing.text
    finally:
        admin.state.admin.close()


def test_rules_list_speaks_marketer(signed_in: SignIn, starter: RulesetStore) -> None:
    doc = starter.get_version("storefront").document
    doc["rules"][1]["enabled"] = False
    doc["rules"][2]["active"] = {"until": "2020-01-01T00:00:00+00:00"}
    starter.save_draft(doc, "seed")
    client, _ = signed_in("viewer")
    page = client.get("/rulesets/storefront").text
    assert '<th scope="col">Status</th>' in page
    assert "On, always" in page and "Off (disabled)" in page and "Ended Jan 1, 2020" in page
    assert "$5.00 off orders of $50.00 or more (code COMEBACK5)" in page
    assert "10% off (code CART10)" in page
