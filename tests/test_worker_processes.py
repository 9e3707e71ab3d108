"""Worker processes started through the CLI: SIGKILL mid-batch and restart, several
processes in one group with members joining and leaving, SIGTERM, /metrics."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
from pathlib import Path
from typing import Any

import redis
from kafka import KafkaConsumer
from kafka.structs import TopicPartition
from sqlalchemy import Engine, text

from decisions.core.settings import Settings
from decisions.runtime.offers import action_id
from tests.helpers import event, minutes, now, wait_for
from tests.test_worker_support import (
    count,
    fast,
    offer_ruleset,
    produce,
    publish,
    read_topic,
    scrape,
    start_worker,
    stop,
)

PAGES = ("home", "category", "product", "search")


def shop_stream(prefix: str, users: int) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """10 events a user, two of them add_to_cart; returns the events and, per user, the
    event id of the first cart event (whose offer the per-user cap keeps)."""
    t = now() - minutes(30)
    events: list[dict[str, Any]] = []
    first_cart: dict[str, str] = {}
    for step in range(10):
        for u in range(users):
            user = f"{prefix}-{u}"
            at = t + minutes(step)
            if step in (4, 8):
                e = event("add_to_cart", user, at, product_id=f"p-{step}", price=20.0,
                          quantity=1)
                first_cart.setdefault(user, e["event_id"])
            elif step % 2:
                e = event("product_view", user, at, product_id=f"p-{u % 7}", category="c")
            else:
                e = event("page_view", user, at, page=PAGES[step % 4])
            events.append(e)
    return events, first_cart


def free_ports(n: int) -> int:
    """A port P with P .. P+n-1 all free."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + n < 65000 and all(_free(base + i) for i in range(n)):
            return base


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def try_scrape(port: int) -> dict[str, float]:
    """Metrics of a worker that may not listen yet. Before it does, a connection to a free
    ephemeral port can even connect to itself (TCP self-connect) and read back its own
    request: that is "not up yet" too."""
    try:
        return scrape(port)
    except (OSError, http.client.HTTPException):
        return {}


def assert_exactly_once(engine: Engine, client: redis.Redis, settings: Settings,
                        events: list[dict[str, Any]], first_cart: dict[str, str]) -> None:
    carts = [e for e in events if e["type"] == "add_to_cart"]
    assert count(engine, "SELECT count(*) FROM events") == len(events)  # nothing lost
    assert count(engine, "SELECT count(*) FROM decisions") == len(carts)
    pipe = client.pipeline(transaction=False)
    for user in first_cart:
        pipe.hkeys(f"d:offers:{{{user}}}")
        pipe.zcard(f"d:ts:{{{user}}}:add_to_cart")
        pipe.zcard(f"d:ts:{{{user}}}:product_view")
    results = pipe.execute()
    for i, (user, event_id) in enumerate(first_cart.items()):
        offers, cart_count, view_count = results[3 * i: 3 * i + 3]
        # one offer, the first cart event's (deterministic id): a replay made no second one
        assert offers == [action_id(event_id, "carts", "every-cart", "offer").encode()], user
        assert (cart_count, view_count) == (2, 5), user  # each event applied once
    # the second cart of a user is refused (the first's offer is active): recorded as
    # refused, not published
    refused = "SELECT count(*) FROM decisions WHERE payload ->> 'refused' = '{}'"
    assert count(engine, refused.format("an offer of this rule is still active")) \
        == len(carts) - len(first_cart)
    actions = read_topic(settings, settings.actions_topic, len(first_cart))
    ids = {r.value for r in actions}
    # published at least once; replays republish the same action ids, never new ones
    assert {re.search(rb'"action_id":"(\w+)"', v).group(1).decode() for v in ids} == {  # type: ignore[union-attr]
        action_id(event_id, "carts", "every-cart", "offer") for event_id in first_cart.values()}


def committed_total(settings: Settings) -> int:
    """The sum of the group's committed offsets (read without joining the group).

    Compared with the number of records produced: Tansu's end offsets are unreliable."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                             group_id=settings.group_id, enable_auto_commit=False)
    try:
        parts = [TopicPartition(settings.events_topic, p) for p in range(settings.topic_partitions)]
        return sum(consumer.committed(tp) or 0 for tp in parts)
    finally:
        consumer.close()


def test_sigkill_mid_batch_then_restart_loses_nothing_and_duplicates_nothing(
        settings: Settings, clean_db: Engine, redis_client: redis.Redis, tmp_path: Path) -> None:
    settings = fast(settings, batch_size=50)
    publish(settings, offer_ruleset())
    events, first_cart = shop_stream("k", 300)
    log = tmp_path / "worker.log"
    worker = start_worker(settings, log)
    try:
        produce(settings, events)
        # kill while it is busy: some events stored, most not (offsets of the batch in
        # progress uncommitted, some of its effects already written)
        wait_for(lambda: count(clean_db, "SELECT count(*) FROM events") >= 300, interval=0.01)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        done = count(clean_db, "SELECT count(*) FROM events")
        assert done < len(events), "the worker finished before it was killed"
        worker = start_worker(settings, log)
        wait_for(lambda: count(clean_db, "SELECT count(*) FROM events") == len(events))
        wait_for(lambda: committed_total(settings) == len(events))
    finally:
        code = stop(worker)  # SIGTERM: finish the batch, commit, exit 0
    assert code == 0, log.read_text()[-3000:]
    assert_exactly_once(clean_db, redis_client, settings, events, first_cart)
    assert "worker stopped" in log.read_text()


def topic_partitions(settings: Settings) -> int:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        return len(consumer.partitions_for_topic(settings.events_topic) or ())
    finally:
        consumer.close()


def three_workers_killed_and_restarted(settings: Settings, engine: Engine,
                                       client: redis.Redis, tmp_path: Path) -> None:
    """More partitions (8) than workers (3): one worker SIGKILLed mid-batch and started
    again, another stopped (SIGTERM) and started again, while events keep coming; every
    event is applied once and every offer made once (effectively-once)."""
    settings = fast(settings, batch_size=50, topic_partitions=8)
    publish(settings, offer_ruleset())
    logs = [tmp_path / f"worker{i}.log" for i in range(3)]
    workers = [start_worker(settings, log) for log in logs]
    assert topic_partitions(settings) == 8  # created with DECISIONS_TOPIC_PARTITIONS
    all_events: list[dict[str, Any]] = []
    all_first: dict[str, str] = {}

    def send(prefix: str, users: int) -> None:
        events, first = shop_stream(prefix, users)
        all_events.extend(events)
        all_first.update(first)
        produce(settings, events)

    def archived() -> int:
        return count(engine, "SELECT count(*) FROM events")

    try:
        send("x", 200)
        wait_for(lambda: archived() >= 300, timeout=90, interval=0.01)  # 3 starting up
        workers[0].send_signal(signal.SIGKILL)  # mid-batch: effects partly written
        workers[0].wait(10)
        assert archived() < len(all_events), "the workers finished before the kill"
        send("y", 100)
        assert stop(workers[1]) == 0  # leaves cleanly: finishes its batch, commits
        workers[0] = start_worker(settings, logs[0])
        workers[1] = start_worker(settings, logs[1])
        send("z", 100)
        wait_for(lambda: archived() == len(all_events), timeout=60)
        # the third worker may have done it all: both restarted ones must be up (their
        # rulesets loaded, signal handlers set) before they are stopped
        wait_for(lambda: all(log.read_text().count("rulesets active") >= 2
                             for log in logs[:2]), timeout=60)
        wait_for(lambda: committed_total(settings) == len(all_events), timeout=30)
    finally:
        codes = [stop(w) for w in workers]
    assert codes == [0, 0, 0], [log.read_text()[-2000:] for log in logs]
    assert_exactly_once(engine, client, settings, all_events, all_first)


def test_three_workers_on_eight_partitions_join_and_leave_effectively_once(
        settings: Settings, clean_db: Engine, redis_client: redis.Redis, tmp_path: Path) -> None:
    three_workers_killed_and_restarted(settings, clean_db, redis_client, tmp_path)


def test_processes_share_partitions_and_rebalance_without_loss(
        settings: Settings, clean_db: Engine, redis_client: redis.Redis, tmp_path: Path) -> None:
    settings = fast(settings, batch_size=100, topic_partitions=4)
    publish(settings, offer_ruleset())
    base = free_ports(3)
    group_log, extra_log = tmp_path / "group.log", tmp_path / "extra.log"
    supervisor = start_worker(settings, group_log, "--processes", "2",
                              DECISIONS_WORKER_METRICS_PORT=str(base))
    extra = None
    all_events: list[dict[str, Any]] = []
    all_first: dict[str, str] = {}

    def owned(*ports: int) -> list[float]:
        return [try_scrape(p).get("decisions_assigned_partitions", -1) for p in ports]

    def send(prefix: str) -> None:
        events, first = shop_stream(prefix, 100)
        all_events.extend(events)
        all_first.update(first)
        produce(settings, events)

    def archived() -> int:
        return count(clean_db, "SELECT count(*) FROM events")

    try:
        wait_for(lambda: owned(base, base + 1) == [2, 2])  # two members, two partitions each
        send("a")
        wait_for(lambda: archived() == 1000)
        # a third member joins: the group rebalances while events keep coming
        extra = start_worker(settings, extra_log, DECISIONS_WORKER_METRICS_PORT=str(base + 2))
        wait_for(lambda: sum(owned(base, base + 1, base + 2)) == 4
                 and min(owned(base, base + 1, base + 2)) >= 1)
        send("b")
        wait_for(lambda: archived() == 2000)
        served = try_scrape(base + 2)
        assert sum(v for k, v in served.items()
                   if k.startswith("decisions_events_processed_total{")) > 0
        # and leaves (SIGTERM: finishes its batch, commits, exits)
        send("c")
        assert stop(extra) == 0
        wait_for(lambda: owned(base, base + 1) in ([2, 2], [1, 3], [3, 1]))
        wait_for(lambda: archived() == 3000)
        wait_for(lambda: committed_total(settings) == 3000)
        metrics = scrape(base)
        for name in ("decisions_consumer_lag", "decisions_event_latency_seconds_count",
                     "decisions_batch_seconds_count"):
            assert name in metrics, name
        assert any(k.startswith('decisions_rule_fired_total{rule="every-cart"')
                   or k.startswith("decisions_rule_fired_total{") for k in metrics)
    finally:
        if extra is not None and extra.poll() is None:
            stop(extra, signal.SIGKILL)
        code = stop(supervisor)
    text_log = group_log.read_text()
    assert code == 0, text_log[-3000:]
    found = re.search(r"started 2 worker processes: (\d+), (\d+)", text_log)
    assert found, text_log[-3000:]
    for pid in map(int, found.groups()):  # no orphans
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        raise AssertionError(f"worker process {pid} outlived its supervisor")
    assert_exactly_once(clean_db, redis_client, settings, all_events, all_first)
    with clean_db.connect() as conn:
        assert conn.execute(text("SELECT count(DISTINCT event_id) FROM decisions")).scalar() \
            == 600
