"""Admin accounts: argon2 password hashes in PostgreSQL (``admin_users``).

A password change ends every session of the user (``admin.sessions``), in the same
transaction; removing a user removes their sessions (the foreign key cascades)."""

from __future__ import annotations

from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from admin.models import ROLES, AdminUser
from admin.sessions import end_sessions
from decisions.core.db import utcnow
from decisions.core.errors import Conflict, FieldError, NotFound, ValidationError
from rulesets.models import AuditEntry

_hasher = PasswordHasher()
# verified against when the user name is unknown, so both paths cost one argon2 check
_DUMMY_HASH = _hasher.hash("no such user")
MIN_PASSWORD = 8


@dataclass(frozen=True)
class User:
    id: int
    username: str
    role: str

    def can(self, role: str) -> bool:
        """True when this user's role is ``role`` or above (viewer < editor < publisher < admin)."""
        return ROLES.index(self.role) >= ROLES.index(role)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_new(username: str, password: str, role: str) -> None:
    errors = []
    if not username or len(username) > 100 or not username.isprintable() or " " in username:
        errors.append(FieldError("username", "1 to 100 printable characters, no spaces"))
    if len(password) < MIN_PASSWORD:
        errors.append(FieldError("password", f"at least {MIN_PASSWORD} characters"))
    if role not in ROLES:
        errors.append(FieldError("role", f"one of {', '.join(ROLES)}"))
    if errors:
        raise ValidationError("cannot create the user", errors)


def create_user(engine: Engine, username: str, password: str, role: str, *,
                actor: str = "system", via: str = "admin UI") -> User:
    """Create the account and its audit-log row (``user_create``) in one transaction."""
    check_new(username, password, role)
    with Session(engine) as s:
        row = AdminUser(username=username, password_hash=hash_password(password), role=role)
        s.add(row)
        s.add(AuditEntry(actor=actor, action="user_create", ruleset=None, version=None,
                         comment=f"user {username} created as {role} ({via})", at=utcnow()))
        try:
            s.commit()
        except IntegrityError:
            raise Conflict(f'a user named "{username}" already exists') from None
        return User(row.id, row.username, row.role)


def record(engine: Engine, actor: str, action: str, comment: str) -> None:
    """An audit-log row about users (``user_password``, ``user_remove``, …)."""
    with Session(engine) as s:
        s.add(AuditEntry(actor=actor, action=action, ruleset=None, version=None,
                         comment=comment, at=utcnow()))
        s.commit()


def exists(engine: Engine, username: str) -> bool:
    with Session(engine) as s:
        return s.scalar(select(AdminUser.id).where(AdminUser.username == username)) is not None


def list_users(engine: Engine) -> list[tuple[User, str]]:
    """Users with their creation time (ISO), by name."""
    with Session(engine) as s:
        rows = s.scalars(select(AdminUser).order_by(AdminUser.username)).all()
        return [(User(r.id, r.username, r.role), f"{r.created_at:%Y-%m-%d %H:%M}") for r in rows]


def get_user(engine: Engine, user_id: int) -> User | None:
    with Session(engine) as s:
        row = s.get(AdminUser, user_id)
        return User(row.id, row.username, row.role) if row else None


def verify(engine: Engine, username: str, password: str) -> User | None:
    """The user when the password matches, else None (same cost for unknown names)."""
    with Session(engine) as s:
        row = s.scalar(select(AdminUser).where(AdminUser.username == username))
        stored = row.password_hash if row else _DUMMY_HASH
        try:
            _hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None:
            return None
        if _hasher.check_needs_rehash(stored):
            row.password_hash = hash_password(password)
            s.commit()
        return User(row.id, row.username, row.role)


def set_role(engine: Engine, username: str, role: str) -> User:
    if role not in ROLES:
        raise ValidationError("cannot change the role",
                              [FieldError("role", f"one of {', '.join(ROLES)}")])
    with Session(engine) as s:
        row = s.scalar(select(AdminUser).where(AdminUser.username == username))
        if row is None:
            raise NotFound(f'no user named "{username}"')
        row.role = role
        s.commit()
        return User(row.id, row.username, row.role)


def set_password(engine: Engine, username: str, password: str) -> User:
    """A new password; every session of the user ends (everywhere they were signed in)."""
    if len(password) < MIN_PASSWORD:
        raise ValidationError("cannot change the password",
                              [FieldError("password", f"at least {MIN_PASSWORD} characters")])
    with Session(engine) as s:
        row = s.scalar(select(AdminUser).where(AdminUser.username == username))
        if row is None:
            raise NotFound(f'no user named "{username}"')
        row.password_hash = hash_password(password)
        s.flush()
        end_sessions(s.connection(), row.id)
        s.commit()
        return User(row.id, row.username, row.role)


def remove_user(engine: Engine, username: str) -> User:
    """Delete the account; its sessions go with it (``ON DELETE CASCADE``)."""
    with Session(engine) as s:
        row = s.scalar(select(AdminUser).where(AdminUser.username == username))
        if row is None:
            raise NotFound(f'no user named "{username}"')
        user = User(row.id, row.username, row.role)
        s.execute(delete(AdminUser).where(AdminUser.id == row.id))
        s.commit()
        return user
