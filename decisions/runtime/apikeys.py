"""Storefront API keys: created, listed and revoked by the CLI, verified by the API.

A key looks like ``dk_<prefix>_<secret>``: the prefix (8 lowercase letters and digits) is
stored in clear and finds the row; the secret carries 256 random bits, so a single
SHA-256 of the whole key is a safe hash (no slow password hash needed: nothing to brute
force) and verification costs microseconds. Only the hash is stored.

Scopes: ``offers:read`` (GET offers and recommendations), ``events:write`` (POST events
and offer feedback), ``customers:write`` (PUT customer attributes, for a CRM or
integration), ``admin`` (everything, including erasure and export).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select, update

from decisions.core.db import make_sessionmaker, utcnow
from decisions.core.errors import FieldError, NotFound, Unauthorized, ValidationError
from decisions.core.models import ApiKey

SCOPES = ("offers:read", "events:write", "customers:write", "admin")
DEFAULT_SCOPES = ("offers:read", "events:write")
KEY_PREFIX = "dk"
_ALPHABET = string.ascii_lowercase + string.digits
PREFIX_LEN = 8


@dataclass(frozen=True)
class KeyInfo:
    """What a verified key may do (never the secret or its hash)."""

    id: int
    name: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: datetime | None = None
    revoked_at: datetime | None = None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "scopes": list(self.scopes),
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def split_key(key: str) -> tuple[str, str] | None:
    """``(prefix, secret)`` of a well-formed key, else None."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX:
        return None
    prefix, secret = parts[1], parts[2]
    if len(prefix) != PREFIX_LEN or any(c not in _ALPHABET for c in prefix) or len(secret) < 20:
        return None
    return prefix, secret


def check_scopes(scopes: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        message = f"unknown scope {bad[0]!r}" if bad else "at least one scope is required"
        raise ValidationError(
            "invalid scopes", [FieldError("scopes", f"{message}; expected {', '.join(SCOPES)}")]
        )
    return tuple(dict.fromkeys(scopes))


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(row.id, row.name, row.prefix, tuple(row.scopes), row.created_at,
                   row.revoked_at)


def create_key(
    engine: Engine, name: str, scopes: list[str] | tuple[str, ...]
) -> tuple[str, KeyInfo]:
    """A new key; the clear key is returned once and never stored."""
    if not name.strip():
        raise ValidationError("invalid key", [FieldError("name", "must not be empty")])
    wanted = check_scopes(scopes)
    prefix = "".join(secrets.choice(_ALPHABET) for _ in range(PREFIX_LEN))
    key = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    with make_sessionmaker(engine).begin() as session:
        row = ApiKey(name=name.strip(), prefix=prefix, key_hash=hash_key(key), scopes=list(wanted))
        session.add(row)
        session.flush()
        return key, _info(row)


def list_keys(engine: Engine, *, include_revoked: bool = True) -> list[KeyInfo]:
    with make_sessionmaker(engine)() as session:
        query = select(ApiKey).order_by(ApiKey.id)
        if not include_revoked:
            query = query.where(ApiKey.revoked_at.is_(None))
        return [_info(row) for row in session.scalars(query)]


def revoke_key(engine: Engine, ident: str) -> KeyInfo:
    """Revoke by prefix (``dk_ab12cd34``, ``ab12cd34``) or numeric id."""
    prefix = ident.removeprefix(KEY_PREFIX + "_").split("_", 1)[0]
    with make_sessionmaker(engine).begin() as session:
        query = select(ApiKey).where(ApiKey.prefix == prefix)
        if ident.isdigit():
            query = select(ApiKey).where(ApiKey.id == int(ident))
        row = session.scalars(query).first()
        if row is None:
            raise NotFound(f"no API key {ident!r}")
        if row.revoked_at is None:
            session.execute(update(ApiKey).where(ApiKey.id == row.id).values(revoked_at=utcnow()))
            session.flush()
            session.refresh(row)
        return _info(row)


def lookup(engine: Engine, key: str) -> KeyInfo:
    """Verify a key against PostgreSQL; raises Unauthorized (DB errors propagate)."""
    parts = split_key(key)
    if parts is None:
        raise Unauthorized("malformed API key")
    with engine.connect() as conn:
        row = conn.execute(
            select(ApiKey.id, ApiKey.name, ApiKey.prefix, ApiKey.key_hash, ApiKey.scopes,
                   ApiKey.created_at, ApiKey.revoked_at).where(ApiKey.prefix == parts[0])
        ).first()
    if row is None or not hmac.compare_digest(row.key_hash, hash_key(key)):
        raise Unauthorized("unknown API key")
    if row.revoked_at is not None:
        raise Unauthorized("API key revoked")
    return KeyInfo(row.id, row.name, row.prefix, tuple(row.scopes), row.created_at)


class KeyCache:
    """Verified keys (and known-bad ones) kept in-process for ``ttl`` seconds.

    A revocation reaches every API process within ``ttl``. When PostgreSQL cannot be
    asked, a key verified earlier stays valid (``stale``) so an outage does not lock out
    storefronts that were already working.
    """

    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, KeyInfo | None]] = {}

    def get(self, key: str) -> tuple[bool, KeyInfo | None]:
        """``(fresh, info)``; info is None for a key known to be invalid."""
        hit = self._entries.get(key)
        if hit is None:
            return False, None
        return time.monotonic() - hit[0] < self.ttl, hit[1]

    def known(self, key: str) -> bool:
        return key in self._entries

    def put(self, key: str, info: KeyInfo | None) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = (time.monotonic(), info)

    def clear(self) -> None:
        self._entries.clear()
