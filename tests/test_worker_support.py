"""Helpers shared by the worker tests (no tests here): fast settings, producing and
reading topics, rulesets as dicts, and worker processes started through the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer
from kafka.structs import TopicPartition
from sqlalchemy import Engine, text

from decisions.core.db import make_engine
from decisions.core.settings import Settings
from decisions.runtime.kafka import Producer, ensure_topics
from rulesets.store import RulesetStore

ROOT = Path(__file__).resolve().parent.parent


def fast(settings: Settings, **overrides: Any) -> Settings:
    """Settings for quick group joins (Tansu holds a join for half the session timeout)."""
    return replace(settings, session_timeout_ms=2000, heartbeat_interval_ms=500,
                   poll_timeout_ms=100, reload_interval_seconds=0.2,
                   worker_retry_max_seconds=0.5, worker_lag_interval_seconds=0.5,
                   **overrides)


def produce(settings: Settings, events: list[dict[str, Any]]) -> None:
    producer = Producer(settings)
    producer.send_many(settings.events_topic, [(e["user_id"], e) for e in events])
    producer.close()


def produce_raw(settings: Settings, records: list[tuple[str | None, bytes | None]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    for key, value in records:
        producer.send(settings.events_topic, key=key.encode() if key else None, value=value)
    producer.flush()
    producer.close()


def read_topic(settings: Settings, topic: str, count: int, timeout: float = 15.0) -> list[Any]:
    """Every record of ``topic`` (no group), once at least ``count`` arrived."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                             enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(records) < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        # a little longer: anything beyond ``count`` would be a duplicate
        for batch in consumer.poll(timeout_ms=300).values():
            records.extend(batch)
        return records
    finally:
        consumer.close()


def offer_ruleset(name: str = "carts", percent: int = 10, **rule: Any) -> dict[str, Any]:
    """One rule: every add_to_cart earns a discount (one active per user: the cap)."""
    return {
        "name": name, "description": "test", "stacking": False,
        "rules": [{
            "name": rule.pop("rule_name", "every-cart"), "priority": 10,
            "when": rule.pop("when", {"all": [{"field": "event.type", "op": "eq",
                                               "value": "add_to_cart"}]}),
            "then": [{"discount": {"percent": percent, "expires_minutes": 600}}],
        }],
    }


def publish(settings: Settings, document: dict[str, Any]) -> int | None:
    engine = make_engine(str(settings.database_url), pool_size=1)
    try:
        return RulesetStore(engine).import_document(document, "test", "test")
    finally:
        engine.dispose()


def count(engine: Engine, sql: str, **params: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(sql), params).scalar_one())


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DECISIONS_")}
    values = {
        "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
        "REDIS_CLUSTER": settings.redis_cluster,
        "KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "EVENTS_TOPIC": settings.events_topic,
        "ACTIONS_TOPIC": settings.actions_topic,
        "DEAD_LETTER_TOPIC": settings.dead_letter_topic, "GROUP_ID": settings.group_id,
        "TOPIC_PARTITIONS": settings.topic_partitions, "BATCH_SIZE": settings.batch_size,
        "SESSION_TIMEOUT_MS": settings.session_timeout_ms,
        "HEARTBEAT_INTERVAL_MS": settings.heartbeat_interval_ms,
        "POLL_TIMEOUT_MS": settings.poll_timeout_ms,
        "RELOAD_INTERVAL_SECONDS": settings.reload_interval_seconds,
        "VAR_DIR": settings.var_dir,
    }
    env.update({"DECISIONS_" + k: str(v) for k, v in values.items()})
    env.update(extra)
    return env


def start_worker(settings: Settings, log: Path, *args: str,
                 **extra: str) -> subprocess.Popen[bytes]:
    """``python -m decisions.cli.main worker ARGS`` with the test's settings in its environment."""
    ensure_topics(settings)
    out = open(log, "ab")  # the child holds it; closed with the test's tmp dir
    return subprocess.Popen(
        [sys.executable, "-m", "decisions.cli.main", "worker", *args], cwd=ROOT,
        env=worker_env(settings, **extra), stdout=out, stderr=subprocess.STDOUT,
    )


def stop(proc: subprocess.Popen[bytes], sig: int | None = None, timeout: float = 20) -> int:
    if proc.poll() is None:
        if sig is None:
            proc.terminate()
        else:
            proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        raise


def scrape(port: int) -> dict[str, float]:
    """A /metrics page as {series: value} (series with labels as written)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        body = resp.read().decode()
    out: dict[str, float] = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            out[series] = float(value)
    return out
