"""Server-side admin sessions: the cookie holds only a random token; the session lives in
PostgreSQL (``admin_sessions``, keyed by the token's SHA-256, so the table's contents do
not sign anyone in).

``ServerSessions`` is the ASGI middleware: it loads the row named by the cookie into
``scope["session"]`` (a plain dict, as Starlette's ``request.session``) and, when the
response starts, writes back what changed:

- the signed-in user changed (sign-in, sign-out): the old row is deleted and a new row
  with a **new token** is made (no session fixation; a copy of the old cookie is dead);
- the data changed (CSRF token, flash messages): the row is updated;
- the session was emptied: the row is deleted and the cookie cleared.

A signed-in session lasts ``DECISIONS_ADMIN_SESSION_SECONDS`` from sign-in; one not signed
in (it holds the sign-in form's CSRF token) lasts at most ``ANONYMOUS_SECONDS``. Expired
rows are deleted whenever a session is made. ``end_sessions`` ends every session of a
user (a password change; removal cascades).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, delete, insert, select, update
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from admin.models import AdminSession
from decisions.core.db import utcnow

log = logging.getLogger(__name__)
COOKIE = "decisions_admin"
USER = "uid"  # the data key of the signed-in user's id (set by the sign-in view)
ANONYMOUS_SECONDS = 3600


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class _Loaded:
    token: str
    user_id: int | None
    data: dict[str, Any]


class SessionStore:
    def __init__(self, engine: Engine, lifetime_seconds: int) -> None:
        self.engine = engine
        self.lifetime = lifetime_seconds

    def load(self, token: str) -> _Loaded | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(AdminSession.user_id, AdminSession.data).where(
                AdminSession.id == _digest(token), AdminSession.expires_at > utcnow())).first()
        return _Loaded(token, row.user_id, dict(row.data or {})) if row else None

    def save(self, loaded: _Loaded | None, data: dict[str, Any]) -> tuple[str | None, int]:
        """Write back ``data``; returns the token the cookie must now hold (None: clear
        it) and its lifetime in seconds (0: unchanged)."""
        user_id = data.get(USER) if isinstance(data.get(USER), int) else None
        if loaded is not None and loaded.user_id == user_id and data == loaded.data:
            return loaded.token, 0  # nothing changed: no write
        with self.engine.begin() as conn:
            if loaded is not None and loaded.user_id == user_id and data:
                conn.execute(update(AdminSession).where(
                    AdminSession.id == _digest(loaded.token)).values(data=_json(data)))
                return loaded.token, 0
            if loaded is not None:
                conn.execute(delete(AdminSession).where(
                    AdminSession.id == _digest(loaded.token)))
            if not data:
                return None, 0
            return self._create(conn, user_id, data)

    def _create(self, conn: Connection, user_id: int | None,
                data: dict[str, Any]) -> tuple[str, int]:
        now = utcnow()
        conn.execute(delete(AdminSession).where(AdminSession.expires_at <= now))
        seconds = self.lifetime if user_id is not None else min(self.lifetime,
                                                                ANONYMOUS_SECONDS)
        token = secrets.token_urlsafe(32)
        conn.execute(insert(AdminSession).values(
            id=_digest(token), user_id=user_id, data=_json(data), created_at=now,
            expires_at=now + timedelta(seconds=seconds)))
        return token, seconds


def end_sessions(conn: Connection, user_id: int) -> int:
    """End every session of the user, in the caller's transaction."""
    result = conn.execute(delete(AdminSession).where(AdminSession.user_id == user_id))
    return int(result.rowcount or 0)


def _json(data: dict[str, Any]) -> dict[str, Any]:
    return dict(orjson.loads(orjson.dumps(data)))  # what JSONB gives back, for comparisons


class ServerSessions:
    """ASGI middleware; the store is made on first use from the app's ``AdminServices``
    (a mounted admin app runs no lifespan)."""

    def __init__(self, app: ASGIApp, lifetime_seconds: int) -> None:
        self.app = app
        self.lifetime = lifetime_seconds
        self._store: SessionStore | None = None

    def store(self, scope: Scope) -> SessionStore:
        if self._store is None:
            self._store = SessionStore(scope["app"].state.admin.db, self.lifetime)
        return self._store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = HTTPConnection(scope).cookies.get(COOKIE) or ""
        loaded: _Loaded | None = None
        available = True
        if token:
            try:
                loaded = await run_in_threadpool(self.store(scope).load, token)
            except OperationalError:
                available = False  # the view answers 503 when it needs the database
        scope["session"] = dict(loaded.data) if loaded else {}

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start" and available:
                session = scope["session"]
                if loaded is not None or session:
                    await self._write(scope, message, loaded, session, bool(token))
            await send(message)

        await self.app(scope, receive, send_with_cookie)

    async def _write(self, scope: Scope, message: Message, loaded: _Loaded | None,
                     session: dict[str, Any], had_cookie: bool) -> None:
        try:
            new, seconds = await run_in_threadpool(self.store(scope).save, loaded, session)
        except OperationalError:
            log.warning("admin session not saved: PostgreSQL unavailable")
            return
        if loaded is not None and new == loaded.token:
            return
        if new is None and not had_cookie:
            return
        path = scope.get("root_path") or "/"
        secure = "; secure" if scope.get("scheme") == "https" else ""
        if new is None:
            cookie = f"{COOKIE}=null; path={path}; expires=Thu, 01 Jan 1970 00:00:00 GMT"
        else:
            cookie = f"{COOKIE}={new}; path={path}; Max-Age={seconds}"
        MutableHeaders(scope=message).append(
            "set-cookie", f"{cookie}; httponly; samesite=lax{secure}")
