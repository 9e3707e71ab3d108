"""Checks of the service URL settings, so a wrong one stops with one line naming it.

``Settings.from_env`` runs these on ``DECISIONS_DATABASE_URL``, ``DECISIONS_REDIS_URL`` and
``DECISIONS_KAFKA_BOOTSTRAP``: a URL of another database (``mysql://``), a malformed one
(``not-a-url``, a port that is not a number) or an unknown connection option gets a
``ConfigError`` saying what was expected, instead of a driver's traceback later. Whether
the service answers is checked where it is used (``check_database``, ``check_redis``,
``kafka.check_reachable``).
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

from decisions.core.errors import ConfigError

DATABASE_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
REDIS_SCHEMES = ("redis", "rediss", "unix")


def _shown(raw: str) -> str:
    """The value as printed in the message: passwords hidden, long junk shortened."""
    from decisions.core.db import redact

    try:
        text = redact(raw)
    except ValueError:
        text = raw
    text = text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= 80 else text[:77] + "..."


def _fail(setting: str, raw: str, why: str, example: str) -> ConfigError:
    return ConfigError(f"{setting}={_shown(raw)!r}: {why}; expected e.g. {example}")


def _split(setting: str, raw: str, example: str) -> SplitResult:
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018  (raises ValueError for a port that is not 0-65535)
    except ValueError as exc:
        raise _fail(setting, raw, f"not a valid URL ({exc})", example) from None
    if not parts.scheme or "://" not in raw:
        raise _fail(setting, raw, "not a URL (no scheme://)", example)
    return parts


def check_database_url(raw: str, setting: str = "DECISIONS_DATABASE_URL") -> None:
    example = "postgresql://user:password@host:5432/decisions"
    parts = _split(setting, raw, example)
    if parts.scheme.lower() not in DATABASE_SCHEMES:
        raise _fail(setting, raw, f"{parts.scheme}:// is not PostgreSQL, the only database "
                    "supported", example)
    from sqlalchemy import create_engine, make_url
    from sqlalchemy.exc import ArgumentError

    from decisions.core.db import sqlalchemy_url

    try:
        url = make_url(sqlalchemy_url(raw))
        _, kwargs = create_engine(url).dialect.create_connect_args(url)
    except (ArgumentError, ValueError, TypeError) as exc:
        raise _fail(setting, raw, f"not a valid database URL ({exc})", example) from None
    kwargs.pop("context", None)
    if any("\x00" in str(value) for value in kwargs.values()):
        # libpq would cut the connection string there and connect somewhere else
        raise _fail(setting, raw, "a NUL character (%00) in the URL", example)
    import psycopg
    from psycopg.conninfo import make_conninfo

    try:
        make_conninfo("", **kwargs)
    except (psycopg.Error, ValueError, TypeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _fail(setting, raw, reason, example) from None


def check_redis_url(raw: str, setting: str = "DECISIONS_REDIS_URL") -> None:
    example = "redis://host:6379/0"
    parts = _split(setting, raw, example)
    if parts.scheme.lower() not in REDIS_SCHEMES:
        raise _fail(setting, raw, f"{parts.scheme}:// is not a Redis URL "
                    f"({', '.join(s + '://' for s in REDIS_SCHEMES)})", example)
    from redis import ConnectionPool

    try:  # builds a connection object (unknown options fail here) without connecting
        ConnectionPool.from_url(raw).make_connection()
    except (ValueError, TypeError) as exc:
        raise _fail(setting, raw, f"not a valid Redis URL ({exc})", example) from None
    if parts.scheme.lower() != "unix" and not parts.hostname:
        raise _fail(setting, raw, "no host", example)


def check_kafka_bootstrap(raw: str, setting: str = "DECISIONS_KAFKA_BOOTSTRAP") -> None:
    example = "broker1:9092,broker2:9092"
    for entry in raw.split(","):
        entry = entry.strip()
        if not entry:
            raise _fail(setting, raw, "an empty server in the list", example)
        address = entry.split("://", 1)[1] if "://" in entry else entry
        try:
            parts = urlsplit("//" + address)
            port = parts.port
        except ValueError as exc:
            raise _fail(setting, raw, f"{entry!r} is not host:port ({exc})", example) from None
        if not parts.hostname or parts.path or parts.query or parts.fragment \
                or parts.username is not None:
            raise _fail(setting, raw, f"{entry!r} is not host:port", example)
        if port == 0:
            raise _fail(setting, raw, f"{entry!r}: port 0", example)
        if not all(c.isprintable() and not c.isspace() for c in address):
            raise _fail(setting, raw, f"{entry!r} is not host:port", example)
