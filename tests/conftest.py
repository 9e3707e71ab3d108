"""Fixtures: real PostgreSQL, Redis and a Kafka-protocol broker for the whole session.

Where ``DECISIONS_DATABASE_URL`` / ``DECISIONS_REDIS_URL`` / ``DECISIONS_KAFKA_BOOTSTRAP``
are set, those services are used; otherwise the embedded ones are started under
``var/test-stack`` (PostgreSQL 18, Valkey, Tansu), exactly as ``decisions up`` does.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, text

from decisions.cli import migrate
from decisions.cli.stack.cluster import EmbeddedCluster
from decisions.cli.stack.embedded import EmbeddedStack
from decisions.core.db import make_engine
from decisions.core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def services() -> Iterator[dict[str, str]]:
    env = os.environ
    var = ROOT / "var" / f"test-stack-{os.getpid()}"
    stack = EmbeddedStack(var)
    try:
        urls = {
            "database_url": env.get("DECISIONS_DATABASE_URL") or stack.start_postgres(),
            "redis_url": env.get("DECISIONS_REDIS_URL") or stack.start_redis(),
            "kafka_bootstrap": env.get("DECISIONS_KAFKA_BOOTSTRAP") or stack.start_kafka(),
        }
        yield urls
    finally:
        stack.stop()
        shutil.rmtree(var, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(services: dict[str, str]) -> Iterator[str]:
    """A fresh database built by the migrations, dropped at the end of the session."""
    server = services["database_url"]
    name = f"decisions_test_{os.getpid()}"
    yield migrate.create_database(server, name)
    migrate.drop_database(server, name)


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture
def clean_db(engine: Engine) -> Engine:
    """Empty every table (the worker and API write from other connections, so no SAVEPOINT)."""
    with engine.begin() as conn:
        tables = conn.execute(
            text(
                "SELECT tablename FROM pg_tables WHERE schemaname='public' "
                "AND tablename <> 'alembic_version' AND tablename NOT LIKE 'events\\_%'"
            )
        ).scalars()
        names = ", ".join(f'"{t}"' for t in tables)
        if names:
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    return engine


@pytest.fixture
def redis_client(services: dict[str, str]) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(services["redis_url"])
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def settings(
    services: dict[str, str],
    database_url: str,
    clean_db: Engine,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> Settings:
    """Settings pointing at the real services, with topics and group unique to this test."""
    suffix = uuid.uuid4().hex[:8]
    base = Settings.from_env({})
    return replace(
        base,
        database_url=database_url,
        redis_url=services["redis_url"],
        kafka_bootstrap=services["kafka_bootstrap"],
        events_topic=f"user-events-{suffix}",
        actions_topic=f"actions-{suffix}",
        dead_letter_topic=f"dlq-{suffix}",
        group_id=f"group-{suffix}",
        topic_partitions=3,
        var_dir=tmp_path / "var",
    )


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[EmbeddedCluster]:
    """A three-node Valkey Cluster (slots split evenly, no replicas) for the session, from
    the embedded binary on free ports; tests may stop and restart its nodes."""
    var = ROOT / "var" / f"test-cluster-{os.getpid()}"
    cluster = EmbeddedCluster(var)
    try:
        cluster.start(3)
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(var, ignore_errors=True)


@pytest.fixture
def cluster_client(redis_cluster: EmbeddedCluster) -> Iterator[redis.Redis]:
    """redis-py's cluster client, every node emptied first."""
    redis_cluster.wait_ok()  # a test before may have restarted a node
    client = redis.RedisCluster.from_url(redis_cluster.url)
    client.flushdb(target_nodes=redis.RedisCluster.PRIMARIES)
    yield client  # type: ignore[misc]
    client.close()


@pytest.fixture
def cluster_settings(settings: Settings, redis_cluster: EmbeddedCluster,
                     cluster_client: redis.Redis) -> Settings:
    """``settings`` with Redis on the cluster (found from its first node's URL, ``auto``)."""
    return replace(settings, redis_url=redis_cluster.url, redis_cluster="auto")
