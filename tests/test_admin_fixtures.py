"""Shared fixtures and helpers of the admin UI tests (this module holds no tests)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from html.parser import HTMLParser
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.testclient import TestClient

from admin.app import create_app
from admin.models import AdminUser
from admin.users import hash_password
from decisions.core.settings import Secret, Settings
from rulesets.document import read_file
from rulesets.store import RulesetStore
from tests.helpers import STARTER

ROLES = ("viewer", "editor", "publisher", "admin")
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


_HASHES: dict[str, str] = {}


def password(username: str) -> str:
    return f"secret-{username}-pw"


@pytest.fixture
def admin_settings(settings: Settings) -> Settings:
    return replace(settings, secret_key=Secret("test-admin-secret"),
                   admin_login_max_failures=3, admin_login_max_failures_per_address=12,
                   admin_login_lockout_seconds=60)


@pytest.fixture
def admin_app(admin_settings: Settings) -> Iterator[Starlette]:
    app = create_app(admin_settings)
    yield app
    app.state.admin.close()


@pytest.fixture
def admin_users(clean_db: Engine) -> dict[str, str]:
    """One user per role (named after it) plus a second publisher; name -> role."""
    users = {role: role for role in ROLES} | {"publisher2": "publisher"}
    with Session(clean_db) as s:
        for name, role in users.items():
            if name not in _HASHES:  # argon2 is slow on purpose: hash once per session
                _HASHES[name] = hash_password(password(name))
            s.add(AdminUser(username=name, password_hash=_HASHES[name], role=role))
        s.commit()
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


class _FormFields(HTMLParser):
    """What a browser would submit from the first ``<form>`` with ``id`` (no JS)."""

    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id = form_id
        self.inside = False
        self.fields: list[tuple[str, str]] = []
        self._select: str | None = None
        self._first_option: str | None = None
        self._selected = False
        self._textarea: str | None = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and a.get("id") == self.form_id:
            self.inside = True
        if not self.inside or "disabled" in a:
            return
        name = a.get("name")
        if tag == "input" and name and a.get("type") not in ("submit", "button"):
            if a.get("type") == "checkbox":
                if "checked" in a:
                    self.fields.append((name, a.get("value") or "on"))
            else:
                self.fields.append((name, a.get("value", "")))
        elif tag == "select" and name:
            self._select, self._first_option, self._selected = name, None, False
        elif tag == "option" and self._select is not None:
            if self._first_option is None:
                self._first_option = a.get("value", "")
            if "selected" in a and not self._selected:
                self.fields.append((self._select, a.get("value", "")))
                self._selected = True
        elif tag == "textarea" and name:
            self._textarea, self._text = name, ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False
        elif tag == "select" and self._select is not None:
            if not self._selected and self._first_option is not None:
                self.fields.append((self._select, self._first_option))
            self._select = None
        elif tag == "textarea" and self._textarea is not None:
            self.fields.append((self._textarea, self._text))
            self._textarea = None

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self._text += data


def form_fields(html: str, form_id: str = "rule-form") -> dict[str, str]:
    parser = _FormFields(form_id)
    parser.feed(html)
    return dict(parser.fields)
