"""Budgets and caps through two worker processes (issue #19, item 7): real Kafka, Redis and
PostgreSQL, the worker started through the CLI with ``--processes 2``.

- A ruleset budget of N grants yields exactly N offers across both processes; the rest are
  recorded as refused ("budget spent"); a version with a higher budget resumes granting.
- A frequency cap (one offer per shopper per day, over four rules) holds when one shopper's
  events arrive on every partition, so both processes grant to the same shopper at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import redis
from kafka.partitioner.default import murmur2
from sqlalchemy import Engine

from decisions.core.settings import Settings
from tests.helpers import event, minutes, now, wait_for
from tests.test_worker_processes import committed_total, free_ports, try_scrape
from tests.test_worker_support import (
    count,
    fast,
    offer_ruleset,
    produce,
    produce_raw,
    publish,
    start_worker,
    stop,
)

PARTITIONS = 4


def _carts(prefix: str, users: int) -> list[dict[str, Any]]:
    t = now() - minutes(20)
    return [event("add_to_cart", f"{prefix}-{u}", t + minutes(u % 10), product_id="p-1",
                  price=50.0, quantity=1) for u in range(users)]


def _offers(client: redis.Redis) -> dict[str, int]:
    out = {}
    for key in client.scan_iter(match="d:offers:*", count=1000):
        out[key.decode()] = int(client.hlen(key))
    return out


def _processed(port: int) -> float:
    return sum(v for k, v in try_scrape(port).items()
               if k.startswith("decisions_events_processed_total{"))


def _versions(port: int) -> float:
    return try_scrape(port).get('decisions_ruleset_active_version{ruleset="promo"}', 0)


def test_a_budget_of_n_grants_yields_exactly_n_across_two_processes(
        settings: Settings, clean_db: Engine, redis_client: redis.Redis, tmp_path: Path) -> None:
    settings = fast(settings, batch_size=20, topic_partitions=PARTITIONS)
    doc = offer_ruleset("promo")
    doc["budget"] = {"grants": 25, "campaign": "promo-2026"}
    publish(settings, doc)
    base = free_ports(2)
    log = tmp_path / "workers.log"
    workers = start_worker(settings, log, "--processes", "2",
                           DECISIONS_WORKER_METRICS_PORT=str(base))
    first, more = _carts("b", 300), _carts("c", 100)
    try:
        wait_for(lambda: [try_scrape(p).get("decisions_assigned_partitions", -1)
                          for p in (base, base + 1)] == [2, 2], timeout=60)
        produce(settings, first)
        wait_for(lambda: committed_total(settings) == len(first), timeout=90)
        assert _processed(base) > 0 and _processed(base + 1) > 0  # both took part
        granted = count(clean_db, "SELECT count(*) FROM decisions WHERE kind = 'offer'"
                        " AND NOT payload ? 'refused'")
        refused = count(clean_db, "SELECT count(*) FROM decisions WHERE kind = 'offer'"
                        " AND payload ->> 'refused' LIKE 'budget spent: campaign promo-2026%'")
        stored = _offers(redis_client)
        print(f"budget 25 grants, 300 shoppers, 2 processes: {granted} granted, "
              f"{refused} refused, {sum(stored.values())} offers in Redis")
        assert (granted, refused, sum(stored.values())) == (25, 275, 25)
        assert redis_client.hget("d:budget:{budget:promo}", "promo-2026|grants") == b"25"
        # raising the budget (a new version, same campaign) resumes the rule: 15 more
        doc["budget"] = {"grants": 40, "campaign": "promo-2026"}
        publish(settings, doc)
        wait_for(lambda: _versions(base) == 2 and _versions(base + 1) == 2)
        produce(settings, more)
        wait_for(lambda: committed_total(settings) == len(first) + len(more), timeout=90)
    finally:
        code = stop(workers)
    assert code == 0, log.read_text()[-3000:]
    assert sum(_offers(redis_client).values()) == 40
    assert count(clean_db, "SELECT count(*) FROM decisions WHERE kind = 'offer'"
                 " AND NOT payload ? 'refused'") == 40
    assert redis_client.hget("d:budget:{budget:promo}", "promo-2026|grants") == b"40"


def _key_on(partition: int, user: str) -> str:
    """A record key for ``user``'s event that lands on ``partition`` (a producer keying
    by session, not by user: the shopper's events then reach every process)."""
    n = 0
    while True:
        key = f"{user}#{n}"
        if (murmur2(key.encode()) & 0x7FFFFFFF) % PARTITIONS == partition:
            return key
        n += 1


def test_a_cap_per_shopper_per_day_holds_across_two_processes(
        settings: Settings, clean_db: Engine, redis_client: redis.Redis, tmp_path: Path) -> None:
    settings = fast(settings, batch_size=10, topic_partitions=PARTITIONS)
    doc = offer_ruleset("promo")
    doc["stacking"] = True
    doc["caps"] = {"per_day": 1}
    doc["rules"] = [{**doc["rules"][0], "name": f"r{i}"} for i in range(4)]
    publish(settings, doc)
    base = free_ports(2)
    log = tmp_path / "workers.log"
    workers = start_worker(settings, log, "--processes", "2",
                           DECISIONS_WORKER_METRICS_PORT=str(base))
    shoppers = [f"s-{u}" for u in range(40)]
    t = now() - minutes(20)
    records = []
    for step in range(8):  # 8 cart events a shopper, two on each partition: 32 offers tried
        for user in shoppers:
            e = event("add_to_cart", user, t + minutes(step), product_id=f"p-{step}",
                      price=30.0, quantity=1)
            records.append((_key_on(step % PARTITIONS, user), orjson.dumps(e)))
    try:
        wait_for(lambda: [try_scrape(p).get("decisions_assigned_partitions", -1)
                          for p in (base, base + 1)] == [2, 2], timeout=60)
        produce_raw(settings, records)
        wait_for(lambda: committed_total(settings) == len(records), timeout=90)
        assert _processed(base) > 0 and _processed(base + 1) > 0
        # the grants counted are the offers stored, not every offer a rule made
        granted_metric = sum(v for p in (base, base + 1) for k, v in try_scrape(p).items()
                             if k.startswith("decisions_actions_granted_total{")
                             and 'kind="offer"' in k)
    finally:
        code = stop(workers)
    assert code == 0, log.read_text()[-3000:]
    assert granted_metric == 40
    stored = _offers(redis_client)
    print(f"cap 1 a day, 40 shoppers x 32 offers tried over 2 processes: "
          f"{sum(stored.values())} offers in Redis, most for one shopper "
          f"{max(stored.values())}")
    assert stored == {f"d:offers:{{{u}}}": 1 for u in shoppers}
    assert count(clean_db, "SELECT count(*) FROM decisions WHERE kind = 'offer'") == 40 * 32
    # every offer the cap refused is recorded as refused, with why; the granted ones are
    # exactly those in Redis
    assert count(clean_db, "SELECT count(*) FROM decisions WHERE kind = 'offer'"
                           " AND NOT payload ? 'refused'") == 40
    assert count(clean_db, "SELECT count(*) FROM decisions WHERE kind = 'offer' AND payload"
                           " ->> 'refused' = 'frequency cap of ruleset promo: 1 a day'") > 0
    assert count(clean_db, "SELECT count(*) FROM decisions WHERE kind = 'offer'"
                           " AND payload ->> 'refused' NOT IN ('frequency cap of ruleset promo:"
                           " 1 a day', 'an offer of this rule is still active')") == 0
