"""Migrations: up, down to nothing, up again on a fresh database; then models and schema agree
(what ``alembic check`` does), the event archive's monthly partitions aside."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from decisions.cli import migrate
from decisions.cli.schema import metadata
from decisions.core.db import make_engine
from decisions.core.events import Event
from decisions.runtime.archive import EventArchive


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    return not (type_ == "table" and name is not None and name.startswith("events_"))


@pytest.fixture
def fresh_url(services: dict[str, str]) -> Iterator[str]:
    server = services["database_url"]
    name = f"decisions_migrations_{os.getpid()}"
    yield migrate.create_database(server, name, migrated=False)
    migrate.drop_database(server, name)


def tables(url: str) -> set[str]:
    engine = make_engine(url, pool_size=1)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_then_models_match(fresh_url: str) -> None:
    migrate.upgrade(fresh_url)
    built = tables(fresh_url)
    assert {"rulesets", "ruleset_versions", "ruleset_drafts", "audit_log", "decisions",
            "events"} <= built
    # data in the archive's partitions must not stop a downgrade
    engine = make_engine(fresh_url, pool_size=1)
    EventArchive(engine).write_batch([Event("e-1", "search", "u-1",
                                            datetime(2026, 1, 5, tzinfo=UTC), {"query": "x"})])
    engine.dispose()
    assert any(t.startswith("events_") for t in tables(fresh_url))

    migrate.downgrade(fresh_url, "base")
    assert tables(fresh_url) <= {"alembic_version"}

    migrate.upgrade(fresh_url)
    assert tables(fresh_url) == built - {t for t in built if t.startswith("events_2")}

    engine = make_engine(fresh_url, pool_size=1)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={
                "compare_type": True, "include_name": include_name})
            assert compare_metadata(context, metadata) == []
            heads = ScriptDirectory.from_config(migrate.alembic_config(fresh_url)).get_heads()
            assert context.get_current_heads() == tuple(heads)
    finally:
        engine.dispose()
