"""A primary of the Redis Cluster fails and its replica takes over (#20): the worker and the
API follow the new slot map by themselves. Three primaries with a replica each, from the
embedded binary; real Kafka and PostgreSQL.

- Before: every shopper's cart event gives an offer, read through the API.
- A primary is stopped (not restarted): while the cluster promotes its replica, every API
  read answers (offers or the fallback, never a 5xx).
- After: the offers written before are read from the promoted replica, and the events
  produced meanwhile are decided: nothing lost, nothing doubled.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import redis
from sqlalchemy import Engine
from starlette.testclient import TestClient

from api.app import create_app
from decisions.cli.stack.cluster import EmbeddedCluster
from decisions.core import keys
from decisions.core.settings import Settings
from decisions.runtime.kafka import ensure_topics
from tests.api_helpers import KeyMaker, auth
from tests.conftest import ROOT
from tests.helpers import event, minutes, now, running_worker, wait_for
from tests.test_worker_processes import committed_total
from tests.test_worker_support import count, fast, offer_ruleset, produce, publish

pytest_plugins = ["tests.api_fixtures"]

FAILED = 1  # the primary stopped: slots 5461-10921


@pytest.fixture
def replicated() -> Iterator[EmbeddedCluster]:
    """Three primaries, each with a replica (nodes 3, 4, 5), for this test alone."""
    var = ROOT / "var" / f"test-failover-{os.getpid()}"
    cluster = EmbeddedCluster(var)
    try:
        cluster.start(3, replicas=1)
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(var, ignore_errors=True)


def _synced(cluster: EmbeddedCluster, primary: int) -> bool:
    """The primary's replica has every write the primary took."""
    infos = {i: redis.Redis(port=n.port).info("replication")
             for i, n in enumerate(cluster.nodes) if n.child is not None}
    offset = infos[primary]["master_repl_offset"]
    port = cluster.nodes[primary].port
    return any(info.get("role") == "slave" and int(info.get("master_port", 0)) == port
               and int(info.get("slave_repl_offset", -1)) >= offset
               for info in infos.values())


def _read(client: TestClient, user: str, key: str) -> dict[str, Any]:
    resp = client.get(f"/v1/users/{user}/offers", headers=auth(key))
    assert resp.status_code == 200, resp.text  # never a 5xx
    body: dict[str, Any] = resp.json()
    return body


def test_a_primary_fails_over_and_the_worker_and_the_api_follow(
        settings: Settings, clean_db: Engine, demo_catalog: object, make_key: KeyMaker,
        replicated: EmbeddedCluster) -> None:
    settings = fast(replace(settings, redis_url=replicated.url, redis_cluster="auto",
                            rate_limit_per_second=1000.0, rate_limit_burst=1000,
                            breaker_reset_seconds=0.2, redis_timeout_ms=200))
    client = redis.RedisCluster.from_url(replicated.url)
    slot_of = client.keyslot
    on_failed = [f"f-{i}" for i in range(200)
                 if replicated.primary_of(slot_of(keys.offers(f"f-{i}"))) == FAILED][:8]
    elsewhere = [f"e-{i}" for i in range(200)
                 if replicated.primary_of(slot_of(keys.offers(f"e-{i}"))) != FAILED][:8]
    before, after = on_failed[:4] + elsewhere[:4], on_failed[4:] + elsewhere[4:]
    publish(settings, offer_ruleset())
    ensure_topics(settings)
    key = make_key("offers:read")
    t = now() - minutes(5)
    carts = [event("add_to_cart", u, t, product_id="p-1", price=40.0, quantity=1)
             for u in before]
    with running_worker(settings), TestClient(create_app(settings)) as api:
        produce(settings, carts)
        wait_for(lambda: all(_read(api, u, key)["offers"] for u in before), timeout=60)
        wait_for(lambda: _synced(replicated, FAILED), timeout=20)

        replicated.stop_node(FAILED)
        later = [event("add_to_cart", u, t + minutes(1), product_id="p-2", price=60.0,
                       quantity=1) for u in after]
        produce(settings, later)  # decided while (or once) the replica takes over
        fallbacks = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            bodies = [_read(api, u, key) for u in before + after]
            fallbacks += sum(not b["personalized"] for b in bodies)
            if all(b["personalized"] and b["offers"] for b in bodies):
                break
            time.sleep(0.2)
        assert all(b["personalized"] and b["offers"] for b in bodies), bodies
        print(f"failover: {fallbacks} fallback answers while the replica took over; "
              f"slots of node {FAILED} now on node "
              f"{replicated.primary_of(slot_of(keys.offers(on_failed[0])))}")
        assert replicated.primary_of(slot_of(keys.offers(on_failed[0]))) != FAILED
        wait_for(lambda: committed_total(settings) == len(carts) + len(later), timeout=60)

    # nothing lost, nothing doubled: each cart archived and decided once, one offer a shopper
    client = redis.RedisCluster.from_url(replicated.url)
    assert count(clean_db, "SELECT count(*) FROM events") == len(carts) + len(later)
    assert count(clean_db, "SELECT count(*) FROM decisions WHERE kind = 'offer'"
                           " AND NOT payload ? 'refused'") == len(before) + len(after)
    assert {u: client.hlen(keys.offers(u)) for u in before + after} == \
        {u: 1 for u in before + after}
    client.close()
