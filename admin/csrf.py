"""CSRF: one random token per session, required on every POST (form field or header)."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from typing import Any

FIELD = "csrf_token"
HEADER = "x-csrf-token"


def token(session: dict[str, Any]) -> str:
    """The session's token, made on first use."""
    value = session.get(FIELD)
    if not isinstance(value, str):
        value = secrets.token_urlsafe(32)
        session[FIELD] = value
    return value


def rotate(session: dict[str, Any]) -> str:
    session.pop(FIELD, None)
    return token(session)


def valid(session: dict[str, Any], form: Mapping[str, Any] | None,
          headers: Mapping[str, str]) -> bool:
    expected = session.get(FIELD)
    sent = (form or {}).get(FIELD) or headers.get(HEADER)
    if not isinstance(expected, str) or not isinstance(sent, str):
        return False
    return hmac.compare_digest(expected, sent)
