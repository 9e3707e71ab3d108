"""Hear about published versions at once: LISTEN on the channel ``RulesetStore`` notifies.

``RulesetStore.publish`` and ``rollback`` run ``pg_notify('decisions_rulesets',
'<name>:<version>')`` in the publishing transaction, so the notification arrives exactly
when the new version is committed. A worker keeps one ``RulesetListener`` and calls
``changed()`` between batches (it never blocks); when it returns True the worker reloads
at once instead of waiting for its next poll of ``RulesetStore.active_marker()``.

Polling stays the safety net: a lost connection, a proxy that drops notifications
(pgbouncer in transaction mode) or a missed message only delay a reload to the next poll.
After a reconnect ``changed()`` returns True once, since notifications sent while
disconnected are lost.
"""

from __future__ import annotations

import logging
import time

import psycopg

from rulesets.store import NOTIFY_CHANNEL

log = logging.getLogger(__name__)


def psycopg_url(url: str) -> str:
    """psycopg takes libpq URLs: drop SQLAlchemy's ``+driver`` part."""
    scheme, sep, rest = url.partition("://")
    return scheme.split("+", 1)[0] + sep + rest


class RulesetListener:
    def __init__(self, database_url: str, *, retry_seconds: float = 5.0,
                 channel: str = NOTIFY_CHANNEL) -> None:
        self.url = psycopg_url(database_url)
        self.channel = channel
        self.retry_seconds = retry_seconds
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._next_try = 0.0
        self.received: list[str] = []  # payloads ("<name>:<version>") of the last changed()

    def _connect(self) -> bool:
        now = time.monotonic()
        if now < self._next_try:
            return False
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=2)
            conn.execute(f'LISTEN "{self.channel}"')
        except psycopg.Error as exc:
            self._next_try = now + self.retry_seconds
            log.warning("cannot LISTEN for ruleset changes (%s); polling only", exc)
            return False
        self._conn = conn
        return True

    def changed(self) -> bool:
        """True if a version was published since the last call (or the connection was
        re-established, so one may have been missed). Never blocks."""
        self.received = []
        if self._conn is None or self._conn.closed:
            self._conn = None
            return self._connect()  # a fresh LISTEN: anything may have happened before
        try:
            for note in self._conn.notifies(timeout=0):
                self.received.append(note.payload)
        except psycopg.Error as exc:
            log.warning("ruleset listener lost its connection (%s)", exc)
            self.close()
            self._next_try = time.monotonic() + self.retry_seconds
            return True
        return bool(self.received)

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
            self._conn = None

    def __enter__(self) -> RulesetListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
