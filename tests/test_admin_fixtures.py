"""Shared fixtures and helpers of the admin UI tests (this module holds no tests)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.testclient import TestClient

from admin.app import create_app
from admin.users import create_user
from decisions.settings import Secret, Settings
from rulesets.document import read_file
from rulesets.store import RulesetStore
from tests.helpers import STARTER

ROLES = ("viewer", "editor", "publisher", "admin")
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def password(username: str) -> str:
    return f"secret-{username}-pw"


@pytest.fixture
def admin_settings(settings: Settings) -> Settings:
    return replace(settings, secret_key=Secret("test-admin-secret"),
                   admin_login_max_failures=3, admin_login_lockout_seconds=60)


@pytest.fixture
def admin_app(admin_settings: Settings) -> Iterator[Starlette]:
    app = create_app(admin_settings)
    yield app
    app.state.admin.close()


@pytest.fixture
def admin_users(clean_db: Engine) -> dict[str, str]:
    """One user per role (named after it) plus a second publisher; name -> role."""
    users = {role: role for role in ROLES} | {"publisher2": "publisher"}
    for name, role in users.items():
        create_user(clean_db, name, password(name), role)
    return users


@pytest.fixture
def starter(clean_db: Engine) -> RulesetStore:
    store = RulesetStore(clean_db)
    data, lines = read_file(STARTER)
    store.import_document(data, "seed", "starter rules", lines=lines)
    return store


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def sign_in(client: TestClient, username: str) -> str:
    """Sign in through the form; returns the session's CSRF token."""
    page = client.get("/login")
    response = client.post("/login", data={
        "username": username, "password": password(username), "csrf_token": csrf_of(page.text),
    }, follow_redirects=False)
    assert response.status_code == 303, response.text
    return csrf_of(client.get("/").text)


@pytest.fixture
def signed_in(admin_app: Starlette, admin_users: dict[str, str]
              ) -> Iterator[Callable[[str], tuple[TestClient, str]]]:
    clients: list[TestClient] = []

    def make(username: str) -> tuple[TestClient, str]:
        client = TestClient(admin_app, follow_redirects=False)
        clients.append(client)
        return client, sign_in(client, username)

    yield make
    for client in clients:
        client.close()


def post(client: TestClient, path: str, token: str, **data: Any) -> Any:
    return client.post(path, data={"csrf_token": token, **data}, follow_redirects=False)
