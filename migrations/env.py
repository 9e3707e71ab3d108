"""Alembic environment: one metadata, lock and statement timeouts, URL from our settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from decisions.cli.schema import metadata
from decisions.core.db import make_engine
from decisions.core.stackfile import resolve_database_url

config = context.config


def database_url() -> str:
    url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
    return url or resolve_database_url()


def run_migrations_offline() -> None:
    context.configure(url=database_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(database_url(), pool_size=1)
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Partitions of the event archive (events_YYYY_MM, events_default) are data, not schema."""
    return not (type_ == "table" and name is not None and name.startswith("events_"))


def _run(connection: object) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.execute(text("SET LOCAL lock_timeout = '10s'"))
        context.execute(text("SET LOCAL statement_timeout = '120s'"))
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
