"""Revocable admin sessions (#17): server-side records, the cookie an opaque id; sign-out,
a password change and a user's removal end them everywhere; the sign-in limits."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import replace

import pytest
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.testclient import TestClient

from admin.app import COOKIE, create_app
from admin.throttle import LoginThrottle
from admin.users import verify
from decisions.cli import main as cli
from decisions.core.settings import Settings
from tests.test_admin_fixtures import *  # noqa: F403 - fixtures
from tests.test_admin_fixtures import csrf_of, password, post, sign_in
from tests.test_worker_support import count

SignIn = Callable[[str], tuple[TestClient, str]]


def copy_of(client: TestClient, app: Starlette) -> TestClient:
    """Another browser holding a copy of ``client``'s session cookie."""
    thief = TestClient(app, follow_redirects=False)
    thief.cookies.set(COOKIE, client.cookies[COOKIE])
    return thief


def test_a_copied_cookie_stops_working_at_sign_out(
        admin_app: Starlette, signed_in: SignIn, clean_db: Engine) -> None:
    admin, token = signed_in("admin")
    cookie = admin.cookies[COOKIE]
    assert "." not in cookie and len(cookie) >= 40  # an opaque id: nothing signed inside
    with copy_of(admin, admin_app) as thief:
        assert thief.get("/users").status_code == 200  # a copy works while signed in ...
        assert post(admin, "/logout", token).status_code == 303
        # ... and not after: no page, no crafted POST
        assert thief.get("/users").status_code == 303
        crafted = post(thief, "/users/add", token, username="mallory", role="admin",
                       password="long-enough")
        assert crafted.status_code == 403
    assert count(clean_db, "SELECT count(*) FROM admin_users WHERE username = 'mallory'") == 0
    assert count(clean_db, "SELECT count(*) FROM admin_sessions WHERE user_id IS NOT NULL") \
        == 0


def test_a_password_change_ends_the_users_sessions_everywhere(
        admin_app: Starlette, signed_in: SignIn, clean_db: Engine) -> None:
    editor, _ = signed_in("editor")
    laptop, _ = signed_in("editor")
    other, _ = signed_in("viewer")
    admin, token = signed_in("admin")
    changed = post(admin, "/users/password", token, username="editor",
                   password="a-new-password")
    assert changed.status_code == 303
    assert "Password of editor changed" in admin.get("/users").text
    assert editor.get("/").status_code == 303 and laptop.get("/").status_code == 303
    assert other.get("/").status_code == 200 and admin.get("/").status_code == 200
    assert verify(clean_db, "editor", "a-new-password") is not None
    assert verify(clean_db, "editor", password("editor")) is None
    short = post(admin, "/users/password", token, username="viewer", password="short")
    assert short.status_code == 303 and other.get("/").status_code == 200
    assert "at least 8 characters" in admin.get("/users").text


def test_removing_a_user_ends_their_sessions(
        admin_app: Starlette, signed_in: SignIn, clean_db: Engine) -> None:
    publisher, ptoken = signed_in("publisher")
    admin, token = signed_in("admin")
    assert post(admin, "/users/remove", token, username="admin").status_code == 303
    assert "You cannot remove yourself" in admin.get("/users").text
    assert post(admin, "/users/remove", token, username="publisher").status_code == 303
    assert "User publisher removed" in admin.get("/users").text
    assert publisher.get("/").status_code == 303
    assert post(publisher, "/rulesets/storefront/rollback", ptoken,
                to_version="1").status_code == 403
    assert count(clean_db, "SELECT count(*) FROM admin_users WHERE username = 'publisher'") == 0
    audit = admin.get("/audit?user=admin").text
    assert "user publisher removed" in audit


def test_sign_in_starts_a_new_session_id(admin_app: Starlette, admin_users: dict) -> None:
    with TestClient(admin_app, follow_redirects=False) as client:
        client.get("/login")
        before = client.cookies[COOKIE]  # an anonymous session holds the CSRF token
        sign_in(client, "viewer")
        assert client.cookies[COOKIE] != before
        with TestClient(admin_app, follow_redirects=False) as planted:
            planted.cookies.set(COOKIE, before)  # a fixed id gains nothing at sign-in
            assert planted.get("/").status_code == 303


def test_sign_in_limits_per_name_and_per_address(admin_settings: Settings,
                                                 admin_users: dict) -> None:
    settings = replace(admin_settings, admin_login_max_failures=2,
                       admin_login_max_failures_per_address=3)
    app = create_app(settings)
    try:
        throttle: LoginThrottle = app.state.admin.throttle
        assert (throttle.max_failures, throttle.max_per_address) == (2, 3)
        with TestClient(app, follow_redirects=False) as client:
            token = csrf_of(client.get("/login").text)
            for i in range(3):
                client.post("/login", data={"username": f"guess{i}", "password": "nope",
                                            "csrf_token": token})
            locked = client.post("/login", data={"username": "viewer",
                                                 "password": password("viewer"),
                                                 "csrf_token": token})
            assert locked.status_code == 429
    finally:
        app.state.admin.close()


def test_the_cli_ends_sessions_too(signed_in: SignIn, admin_settings: Settings,
                                   monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str], clean_db: Engine) -> None:
    monkeypatch.setenv("DECISIONS_DATABASE_URL", str(admin_settings.database_url))
    editor, _ = signed_in("editor")
    viewer, _ = signed_in("viewer")
    monkeypatch.setattr("sys.stdin", io.StringIO("another-password\n"))
    assert cli.main(["users", "password", "editor", "--password-stdin"]) == 0
    assert "password of editor changed" in capsys.readouterr().out
    assert editor.get("/").status_code == 303 and viewer.get("/").status_code == 200
    assert cli.main(["users", "remove", "viewer"]) == 0
    assert viewer.get("/").status_code == 303
    assert cli.main(["users", "remove", "viewer"]) == 1
    assert 'no user named "viewer"' in capsys.readouterr().err
