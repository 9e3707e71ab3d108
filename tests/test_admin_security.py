"""Authorization on the server for every route, CSRF on every POST, sign-in, sessions,
throttling, four eyes, escaping, error pages in the layout."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import pytest
from sqlalchemy import Engine, text
from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from admin.app import create_app
from admin.models import ROLES
from decisions.core.settings import Settings
from rulesets.store import RulesetStore
from tests.test_admin_fixtures import *  # noqa: F403 - fixtures
from tests.test_admin_fixtures import csrf_of, form_fields, password, post, sign_in

SignIn = Callable[[str], tuple[TestClient, str]]

# the least role each route needs (None: no sign-in); every route must be listed here
LEAST_ROLE: dict[tuple[str, str], str | None] = {
    ("GET", "login"): None, ("POST", "login"): None, ("POST", "logout"): None,
    ("GET", "rulesets"): "viewer", ("GET", "ruleset"): "viewer",
    ("POST", "ruleset_settings"): "editor", ("POST", "delete_rule"): "editor",
    ("GET", "new_ruleset"): "editor", ("POST", "new_ruleset"): "editor",
    ("GET", "new_rule"): "editor", ("POST", "new_rule"): "editor",
    ("GET", "edit_rule"): "editor", ("POST", "edit_rule"): "editor",
    ("POST", "rule_source"): "editor",
    ("GET", "trial"): "viewer", ("POST", "trial"): "viewer",
    ("GET", "backtest"): "viewer", ("POST", "backtest_start"): "editor",
    ("GET", "backtest_run"): "viewer", ("GET", "backtest_status"): "viewer",
    ("POST", "backtest_cancel"): "editor",
    ("GET", "history"): "viewer", ("GET", "diff"): "viewer",
    ("POST", "publish"): "publisher", ("POST", "rollback"): "publisher",
    ("GET", "audit"): "viewer", ("GET", "audit_entry"): "viewer", ("GET", "performance"): "viewer",
    ("GET", "users"): "admin", ("POST", "add_user"): "admin", ("POST", "change_role"): "admin",
    ("POST", "change_password"): "admin", ("POST", "remove_user"): "admin",
}
PARAMS = {"name": "storefront", "index": "0", "run_id": "0123456789ab", "entry_id": "1"}


def routes(app: Starlette) -> list[tuple[str, str, str]]:
    out = []
    for route in app.routes:
        if isinstance(route, Mount):
            continue
        assert isinstance(route, Route)
        path = route.path
        for key, value in PARAMS.items():
            path = path.replace("{" + key + "}", value).replace("{" + key + ":int}", value)
        for method in sorted((route.methods or set()) - {"HEAD"}):
            out.append((method, route.name, path))
    return out


def footprint(engine: Engine) -> tuple[int, ...]:
    """Rows that any change leaves behind."""
    with engine.connect() as conn:
        return tuple(int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one())
                     for t in ("audit_log", "ruleset_versions", "ruleset_drafts", "rulesets"))


def test_every_route_has_a_declared_role(admin_app: Starlette) -> None:
    assert {(m, n) for m, n, _ in routes(admin_app)} == set(LEAST_ROLE)


def test_below_the_role_is_refused_even_with_a_hand_crafted_post(
        admin_app: Starlette, signed_in: SignIn, starter: RulesetStore,
        clean_db: Engine) -> None:
    before = footprint(clean_db)
    checked = 0
    for role in ROLES:
        client, token = signed_in(role)
        for method, name, path in routes(admin_app):
            least = LEAST_ROLE[(method, name)]
            if least is None or ROLES.index(role) >= ROLES.index(least):
                continue
            data = {"csrf_token": token, "comment": "sneaky", "to_version": "1",
                    "revision": "", "base_version": "1", "from": "2026-01-01",
                    "to": "2026-12-31", "description": "x"}
            response = client.request(method, path, data=data if method == "POST" else None)
            assert response.status_code == 403, (role, method, path, response.status_code)
            assert "Not allowed" in response.text and f"needs the {least} role" in response.text
            assert "Sign out" in response.text  # the error page has the layout
            checked += 1
    assert checked == 30  # 18 refusals for viewer, 7 for editor, 5 for publisher
    assert footprint(clean_db) == before
    assert starter.get_version("storefront").version == 1


def test_every_post_needs_the_csrf_token(admin_app: Starlette, signed_in: SignIn,
                                         starter: RulesetStore, clean_db: Engine) -> None:
    client, token = signed_in("admin")
    before = footprint(clean_db)
    for method, _, path in routes(admin_app):
        if method != "POST":
            continue
        for data in ({}, {"csrf_token": "forged"}, {"csrf_token": token[:-1] + "x"}):
            response = client.post(path, data={"comment": "c", "to_version": "1", **data})
            assert response.status_code == 403, (path, data)
            assert "CSRF" in response.text
    # a JavaScript call may send the token in a header instead
    ok = client.post("/editor/source", data={"index": "0"}, headers={"X-CSRF-Token": token})
    assert ok.status_code == 200
    assert footprint(clean_db) == before


def test_signed_out_visitors_are_sent_to_sign_in(admin_app: Starlette, admin_users: dict,
                                                 starter: RulesetStore) -> None:
    with TestClient(admin_app, follow_redirects=False) as client:
        for method, name, path in routes(admin_app):
            if LEAST_ROLE[(method, name)] is None:
                continue
            response = client.request(method, path)
            if method == "GET":
                assert response.status_code == 303, path
                assert response.headers["location"].startswith("/login?next=")
            else:
                assert response.status_code == 403, path


def test_publisher_publishes_viewer_cannot(signed_in: SignIn, starter: RulesetStore) -> None:
    editor, _ = signed_in("editor")
    fields = form_fields(editor.get("/rulesets/storefront/rules/0").text)
    fields["rules[0].priority"] = "150"
    assert editor.post("/rulesets/storefront/rules/0",
                       data={**fields, "action": "save"}).status_code == 303
    viewer, vtoken = signed_in("viewer")
    assert post(viewer, "/rulesets/storefront/publish", vtoken, revision="1",
                comment="x").status_code == 403
    publisher, ptoken = signed_in("publisher")
    missing = post(publisher, "/rulesets/storefront/publish", ptoken, revision="1", comment="")
    assert missing.status_code == 303 and starter.get_version("storefront").version == 1
    done = post(publisher, "/rulesets/storefront/publish", ptoken, revision="1",
                comment="raise the priority")
    assert done.status_code == 303 and done.headers["location"] == "/rulesets/storefront/history"
    assert "Published storefront version 2" in publisher.get(done.headers["location"]).text
    version = starter.versions("storefront")[0]
    # the writer is the author; the publisher, someone else, approved it
    assert (version.version, version.author, version.approved_by, version.comment) == (
        2, "editor", "publisher", "raise the priority")
    rolled = post(publisher, "/rulesets/storefront/rollback", ptoken, to_version="1")
    assert rolled.status_code == 303
    assert starter.get_version("storefront").version == 3
    assert starter.get_version("storefront").document == starter.get_version(
        "storefront", 1).document


def test_four_eyes_needs_a_second_person(signed_in: SignIn, starter: RulesetStore) -> None:
    publisher, token = signed_in("publisher")
    page = publisher.get("/rulesets/storefront")
    data = {"description": "guarded", "four_eyes": "on", "revision": "", "base_version": "1"}
    assert post(publisher, "/rulesets/storefront/settings", token, **data).status_code == 303
    own_page = publisher.get("/rulesets/storefront").text
    assert "Approve and publish" not in own_page  # not offered to the draft's own editor
    assert "you edited this draft last" in own_page
    own = post(publisher, "/rulesets/storefront/publish", token, revision="1", comment="mine")
    assert "Not published" in publisher.get(own.headers["location"]).text
    assert starter.get_version("storefront").version == 1
    second, token2 = signed_in("publisher2")
    assert "Approve and publish" in second.get("/rulesets/storefront").text
    done = post(second, "/rulesets/storefront/publish", token2, revision="1", comment="ok")
    assert done.status_code == 303
    version = starter.versions("storefront")[0]
    assert (version.version, version.author, version.approved_by) == (2, "publisher",
                                                                      "publisher2")
    history = second.get("/rulesets/storefront/history").text
    assert "Written by" in history and "approved by publisher2" in history
    assert page.status_code == 200


def test_four_eyes_cannot_be_switched_off_by_the_drafts_editor(
        signed_in: SignIn, starter: RulesetStore) -> None:
    doc = starter.get_version("storefront").document
    starter.save_draft({**doc, "four_eyes": True}, "seed")
    starter.publish("storefront", "seed", "four eyes on", approved_by="publisher2")
    publisher, token = signed_in("publisher")
    data = {"description": "sneaky", "revision": "", "base_version": "2"}  # four_eyes off
    assert post(publisher, "/rulesets/storefront/settings", token, **data).status_code == 303
    refused = post(publisher, "/rulesets/storefront/publish", token, revision="1", comment="x")
    assert "needs a second person" in publisher.get(refused.headers["location"]).text
    assert starter.get_version("storefront").version == 2


def test_sign_in_throttled_after_repeated_failures(admin_app: Starlette,
                                                   admin_users: dict) -> None:
    with TestClient(admin_app, follow_redirects=False) as client:
        token = csrf_of(client.get("/login").text)
        for _ in range(3):
            wrong = client.post("/login", data={"username": "editor", "password": "nope",
                                                "csrf_token": token})
            assert wrong.status_code == 401 and "Wrong user name or password" in wrong.text
        right = client.post("/login", data={"username": "editor",
                                             "password": password("editor"),
                                             "csrf_token": token})
        assert right.status_code == 429 and "Too many failed sign-ins" in right.text
        # another user from the same address still signs in ...
        other = client.post("/login", data={"username": "viewer",
                                            "password": password("viewer"),
                                            "csrf_token": token})
        assert other.status_code == 303
        # ... until the address itself has failed four times the limit
        client.cookies.clear()
        token = csrf_of(client.get("/login").text)
        for i in range(9):
            client.post("/login", data={"username": f"guess{i}", "password": "nope",
                                        "csrf_token": token})
        locked = client.post("/login", data={"username": "publisher",
                                             "password": password("publisher"),
                                             "csrf_token": token})
        assert locked.status_code == 429


def test_session_expires_and_sign_out_ends_it(admin_settings: Settings, admin_users: dict,
                                              starter: RulesetStore) -> None:
    app = create_app(replace(admin_settings, admin_session_seconds=1))
    try:
        with TestClient(app, follow_redirects=False) as client:
            sign_in(client, "viewer")
            assert client.get("/").status_code == 200
            time.sleep(1.2)
            assert client.get("/").status_code == 303
            token = sign_in(client, "viewer")
            out = post(client, "/logout", token)
            assert out.status_code == 303 and out.headers["location"] == "/login"
            assert client.get("/").status_code == 303
    finally:
        app.state.admin.close()


def test_next_after_sign_in_stays_on_this_site(admin_app: Starlette, admin_users: dict) -> None:
    with TestClient(admin_app, follow_redirects=False) as client:
        for target, expected in (("/audit", "/audit"), ("//evil.example/x", "/"),
                                 ("https://evil.example/", "/")):
            client.cookies.clear()
            token = csrf_of(client.get("/login").text)
            response = client.post("/login", data={
                "username": "viewer", "password": password("viewer"), "csrf_token": token,
                "next": target})
            assert response.headers["location"] == expected, target


def test_rule_content_is_escaped(signed_in: SignIn, starter: RulesetStore) -> None:
    client, _ = signed_in("editor")
    fields = form_fields(client.get("/rulesets/storefront/rules/0").text)
    attack = '<script>alert("x")</script>'
    fields["rules[0].description"] = attack
    fields["rules[0].then[0].discount.code"] = '"><img src=x onerror=alert(1)>'
    assert client.post("/rulesets/storefront/rules/0",
                       data={**fields, "action": "save"}).status_code == 303
    for path in ("/rulesets/storefront", "/rulesets/storefront/rules/0",
                 "/rulesets/storefront/diff?a=1&b=draft"):
        html = client.get(path).text
        assert attack not in html and "<img src=x" not in html, path
        assert "&lt;script&gt;" in html, path


@pytest.mark.parametrize("path", ["/rulesets/nope", "/no/such/page",
                                  "/rulesets/storefront/rules/99",
                                  "/rulesets/storefront/backtest/feedfeedfeed"])
def test_not_found_pages_use_the_layout(signed_in: SignIn, starter: RulesetStore,
                                        path: str) -> None:
    client, _ = signed_in("editor")
    response = client.get(path)
    assert response.status_code == 404
    assert "Not found" in response.text and "Sign out" in response.text


def test_admin_manages_users(signed_in: SignIn, clean_db: Engine) -> None:
    admin, token = signed_in("admin")
    short = post(admin, "/users/add", token, username="zoe", role="editor", password="short")
    assert short.status_code == 422 and 'id="u-password-error"' in short.text
    added = post(admin, "/users/add", token, username="zoe", role="editor",
                 password="long-enough")
    assert added.status_code == 303
    assert post(admin, "/users/add", token, username="zoe", role="viewer",
                password="long-enough").status_code == 422  # taken
    assert post(admin, "/users/role", token, username="zoe", role="publisher").status_code == 303
    assert post(admin, "/users/role", token, username="admin", role="viewer").status_code == 303
    page = admin.get("/users").text
    assert "You cannot change your own role" in page
    from admin.users import verify

    zoe = verify(clean_db, "zoe", "long-enough")
    assert zoe is not None and zoe.role == "publisher"
    audit = admin.get("/audit?user=admin").text
    assert "user zoe created as editor" in audit and "user zoe is now publisher" in audit
