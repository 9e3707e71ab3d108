"""Stream worker benchmark: throughput for 1, 2 (or more) worker processes, on one Redis
and on a Redis Cluster, produce-to-offer latency at a fixed rate, beside the raw
kafka-python consume rate and the raw durable_rules rate on the same machine.

    .venv/bin/python benchmarks/worker_throughput.py            # full run (a few minutes)
    .venv/bin/python benchmarks/worker_throughput.py --events 20000 --users 2000  # quick
    # tracing off / on (records carry a traceparent, sampled at 0.1 and 1), 1 process,
    # alternating rounds; spans go to an OTLP/HTTP sink in this process
    .venv/bin/python benchmarks/worker_throughput.py --events 30000 --skip raw,durable,w1,w2,latency \
        --tracing off,0.1,1 --rounds 2
    # processes x Redis, side by side (the cluster: 3 embedded Valkey nodes, see
    # decisions/cli/stack/cluster.py; or DECISIONS_REDIS_CLUSTER_URL, one node's URL)
    .venv/bin/python benchmarks/worker_throughput.py --redis single,cluster \
        --processes 1,2,4 --partitions 12 --skip raw,durable,latency

Uses the services named by DECISIONS_DATABASE_URL / DECISIONS_REDIS_URL /
DECISIONS_KAFKA_BOOTSTRAP when set, else starts the embedded ones under var/bench-worker
(a fresh database ``decisions_bench`` is created and migrated; Redis is flushed between
phases, so do not point it at a Redis holding anything you need). Rulesets: the starter
rulesets (rulesets/starter: 6 rules, offers and recommendations).
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import redis
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.otlp_sink import OtlpSink  # noqa: E402
from decisions.cli import migrate  # noqa: E402
from decisions.cli.stack.cluster import EmbeddedCluster  # noqa: E402
from decisions.cli.stack.embedded import EmbeddedStack  # noqa: E402
from decisions.core.db import make_engine  # noqa: E402
from decisions.core.events import parse_event  # noqa: E402
from decisions.core.resp import cluster as cluster_mode  # noqa: E402
from decisions.core.settings import Settings  # noqa: E402
from decisions.runtime.engine import RuleEngine  # noqa: E402
from decisions.runtime.kafka import ensure_topics  # noqa: E402
from decisions.runtime.offers import active_offers  # noqa: E402
from rulesets.compile import compile_ruleset  # noqa: E402
from rulesets.document import read_file  # noqa: E402
from rulesets.facts import build_fact  # noqa: E402
from rulesets.store import RulesetStore  # noqa: E402

STARTER = ROOT / "rulesets" / "starter"
PAGES = ["home", "category", "product", "search", "cart", "checkout"]


# -- a shop's stream ------------------------------------------------------------------
def generate(n_events: int, n_users: int, seed: int = 7) -> list[tuple[str, bytes]]:
    """Sessions of browsing: mostly page and product views, fewer cart events, few
    purchases; products and users follow skewed popularity. Returns (key, value) in
    event-time order across users (interleaved as a storefront would send them)."""
    rnd = random.Random(seed)
    products = [(f"p-{i}", f"cat-{i % 25}", round(rnd.uniform(5, 300), 2)) for i in range(3000)]
    weights = [1 / (i + 1) ** 0.8 for i in range(len(products))]
    user_weights = [1 / (i + 1) ** 0.5 for i in range(n_users)]
    per_user = Counter(rnd.choices(range(n_users), user_weights, k=n_events))
    end = datetime.now(UTC) - timedelta(minutes=1)
    start = end - timedelta(hours=24)
    streams = []
    for u, count in per_user.items():
        streams.append(_user_events(rnd, f"u-{u}", count, products, weights, start, end))
    merged = heapq.merge(*streams, key=lambda item: item[0])
    return [(user, value) for _, user, value in merged]


def _user_events(rnd: random.Random, user: str, count: int, products: list[tuple[str, str, float]],
                 weights: list[float], start: datetime, end: datetime) -> list[tuple[float, str, bytes]]:
    out: list[tuple[float, str, bytes]] = []
    t = start + timedelta(seconds=rnd.uniform(0, (end - start).total_seconds() * 0.8))
    cart: dict[str, tuple[float, int]] = {}
    session_left = 0
    for _ in range(count):
        if session_left <= 0:  # a new session, hours later
            t += timedelta(minutes=rnd.uniform(35, 240))
            session_left = rnd.randint(5, 30)
            kind = "page_view"
        else:
            t += timedelta(seconds=rnd.uniform(3, 90))
            r = rnd.random()
            if r < 0.30:
                kind = "page_view"
            elif r < 0.75:
                kind = "product_view"
            elif r < 0.83:
                kind = "click"
            elif r < 0.88:
                kind = "search"
            elif r < 0.965:
                kind = "add_to_cart"
            elif r < 0.975:
                kind = "remove_from_cart" if cart else "product_view"
            else:
                kind = "purchase" if cart else "add_to_cart"
        session_left -= 1
        pid, cat, price = rnd.choices(products, weights)[0]
        props: dict[str, Any]
        if kind == "page_view":
            props = {"page": rnd.choice(PAGES), "url": "/"}
        elif kind == "product_view":
            props = {"product_id": pid, "category": cat, "price": price}
        elif kind == "click":
            props = {"element": "recommendation", "product_id": pid}
        elif kind == "search":
            props = {"query": rnd.choice(["shoes", "red dress", "bag", "sale", "jacket"])}
        elif kind == "add_to_cart":
            qty = rnd.choice([1, 1, 1, 2])
            cart[pid] = (price, cart.get(pid, (price, 0))[1] + qty)
            props = {"product_id": pid, "price": price, "quantity": qty, "category": cat}
        elif kind == "remove_from_cart":
            pid = rnd.choice(sorted(cart))
            price, qty = cart.pop(pid)
            props = {"product_id": pid, "price": price, "quantity": qty}
        else:
            items = [{"product_id": p, "price": pr, "quantity": q} for p, (pr, q) in cart.items()]
            total = round(sum(pr * q for pr, q in cart.values()), 2)
            props = {"order_id": uuid.uuid4().hex[:12], "items": items, "total": total}
            cart.clear()
        ts = min(t, end)
        value = orjson.dumps({"event_id": uuid.uuid4().hex, "type": kind, "user_id": user,
                              "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                              "properties": props})
        out.append((ts.timestamp(), user, value))
    return out


# -- plumbing -------------------------------------------------------------------------
def services(var: Path) -> tuple[dict[str, str], EmbeddedStack | None]:
    env = os.environ
    stack = None
    urls = {k: env.get("DECISIONS_" + k.upper(), "") for k in
            ("database_url", "redis_url", "kafka_bootstrap")}
    if not all(urls.values()):
        stack = EmbeddedStack(var)
        urls["database_url"] = urls["database_url"] or stack.start_postgres()
        urls["redis_url"] = urls["redis_url"] or stack.start_redis()
        urls["kafka_bootstrap"] = urls["kafka_bootstrap"] or stack.start_kafka()
    server = urls["database_url"]
    urls["database_url"] = migrate.create_database(server, "decisions_bench")
    engine = make_engine(urls["database_url"], pool_size=1)
    store = RulesetStore(engine)
    for path in sorted(STARTER.glob("*.yaml")):
        data, lines = read_file(path)
        store.import_document(data, "bench", "starter", lines=lines)
    engine.dispose()
    return urls, stack


def redis_nodes(url: str) -> list[redis.Redis]:
    """One client per primary of the Redis behind ``url`` (itself when no cluster)."""
    if not cluster_mode.is_cluster(url):
        return [redis.Redis.from_url(url)]
    rc = redis.RedisCluster.from_url(url)
    try:
        return [redis.Redis(host=n.host, port=n.port) for n in rc.get_primaries()]
    finally:
        rc.close()


def reset(urls: dict[str, str]) -> None:
    for client in redis_nodes(urls["redis_url"]):
        client.flushdb()
        client.config_resetstat()  # commandstats count from here (redis_top)
        client.close()
    with psycopg.connect(urls["database_url"], autocommit=True) as conn:
        conn.execute("TRUNCATE events, decisions")


def produce(bootstrap: str, topic: str, records: list[tuple[str, bytes]],
            sampled: float | None = None) -> float:
    """``sampled``: every record carries a W3C traceparent (as the API writes it with tracing
    on), this share of them with the sampled flag; None: no header (tracing off)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, batch_size=256 * 1024,
                             acks="all", max_in_flight_requests_per_connection=5)
    rnd = random.Random(11)
    started = time.perf_counter()
    for key, value in records:
        headers = None
        if sampled is not None:
            flags = 1 if rnd.random() < sampled else 0
            headers = [("traceparent", b"00-%032x-%016x-%02x" % (
                rnd.getrandbits(128) | 1, rnd.getrandbits(64) | 1, flags))]
        producer.send(topic, key=key.encode(), value=value, headers=headers)
    producer.flush()
    elapsed = time.perf_counter() - started
    producer.close()
    return len(records) / elapsed


def raw_consume_rate(bootstrap: str, topic: str, total: int) -> float:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id="raw-" + uuid.uuid4().hex,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             session_timeout_ms=2000, heartbeat_interval_ms=500,
                             max_poll_records=500)
    seen = 0
    started = None
    while seen < total:
        for batch in consumer.poll(timeout_ms=500).values():
            if started is None:
                started = time.perf_counter()
            seen += len(batch)
    assert started is not None
    elapsed = time.perf_counter() - started
    consumer.close()
    return seen / elapsed


def durable_rates(records: list[tuple[str, bytes]], n: int = 30000) -> tuple[float, float]:
    """(raw durable_rules posts/s for a 2-rule ruleset, our engine's evaluations/s for
    the starter rulesets on realistic facts)."""
    from durable import engine as durable

    class Host(durable.Host):
        def get_action(self, action_name: str) -> Any:
            return lambda c: None

    host = Host()
    host.set_rulesets({"raw": {
        "r1": {"all": [{"m": {"$and": [{"e_type": "add_to_cart"}, {"$gt": {"s_cart_value": 200}}]}}],
               "run": "a"},
        "r2": {"all": [{"m": {"$and": [{"e_type": "page_view"}, {"s_session_page_views": 3}]}}],
               "run": "b"}}})
    facts = []
    for i, (_, value) in enumerate(records[:n]):
        data = orjson.loads(value)
        facts.append({"sid": "0", "id": f"f{i}", "e_type": data["type"],
                      "s_cart_value": i % 400, "s_session_page_views": i % 5})
    started = time.perf_counter()
    for fact in facts:
        try:
            host.assert_fact("raw", fact)
        except durable.MessageNotHandledException:
            pass
        host.retract_fact("raw", fact)
    raw = len(facts) / (time.perf_counter() - started)

    engine = RuleEngine()
    compiled = []
    for i, path in enumerate(sorted(STARTER.glob("*.yaml"))):
        data, _ = read_file(path)
        compiled.append(compile_ruleset(data, i + 1))
    snapshot = {"cart_value": 120.0, "cart_items": 2, "cart_lines": 2, "order_count": 0,
                "session_page_views": 3, "session_product_views": 4, "since_page_checkout": 100,
                "days_since_first_seen": 0.2, "days_since_last_purchase": -1,
                "recent_products": ["p-1", "p-2"], "cart_products": ["p-1"], "segments": []}
    events = [parse_event(orjson.loads(v), internal=True) for _, v in records[:n]]
    started = time.perf_counter()
    for event in events:
        fact = build_fact(event, snapshot, {}, {})
        for c in compiled:
            engine.evaluate(c, event, fact)
    ours = len(events) / (time.perf_counter() - started)
    return raw, ours


def worker_env(urls: dict[str, str], topic: str, group: str, partitions: int = 6,
               **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DECISIONS_")}
    env.update({
        "DECISIONS_DATABASE_URL": urls["database_url"], "DECISIONS_REDIS_URL": urls["redis_url"],
        "DECISIONS_KAFKA_BOOTSTRAP": urls["kafka_bootstrap"], "DECISIONS_EVENTS_TOPIC": topic,
        "DECISIONS_ACTIONS_TOPIC": topic + ".actions", "DECISIONS_DEAD_LETTER_TOPIC": topic + ".dlq",
        "DECISIONS_GROUP_ID": group, "DECISIONS_SESSION_TIMEOUT_MS": "2000",
        "DECISIONS_HEARTBEAT_INTERVAL_MS": "500", "DECISIONS_LOG_LEVEL": "WARNING",
        "DECISIONS_TOPIC_PARTITIONS": str(partitions),
    })
    # BENCH_WORKER_<SETTING>=value tunes the measured workers (e.g. BENCH_WORKER_BATCH_SIZE)
    env.update({"DECISIONS_" + k[len("BENCH_WORKER_"):]: v for k, v in os.environ.items()
                if k.startswith("BENCH_WORKER_")})
    env.update(extra)
    return env


def committed(consumer: KafkaConsumer, topic: str, partitions: int) -> int:
    return sum(consumer.committed(TopicPartition(topic, p)) or 0 for p in range(partitions))


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds used: user + system)."""
    tick = os.sysconf("SC_CLK_TCK")
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(stat.parent.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return table


def tree_cpu(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each named process and its descendants (live ones)."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out = {}
    for name, root in pids.items():
        total, todo = 0.0, [root]
        while todo:
            pid = todo.pop()
            total += table.get(pid, (0, 0.0))[1]
            todo.extend(children.get(pid, []))
        out[name] = total
    return out


def worker_rate(urls: dict[str, str], topic: str, total: int, processes: int,
                max_seconds: float, log_dir: Path, services: dict[str, int],
                extra_env: dict[str, str] | None = None, partitions: int = 6, tag: str = "",
                cwd: Path = ROOT) -> tuple[float, int, float, dict[str, float]]:
    """Sustained events/s of N worker processes draining ``total`` records already in
    ``topic``: from the first commit to the last (joins and start-up excluded); and the
    CPU time each process (worker, embedded services) spent per event meanwhile — a
    figure that, unlike the rate, does not depend on what else the box is running."""
    reset(urls)
    group = f"bench-{processes}p-{uuid.uuid4().hex[:6]}"
    log = open(log_dir / f"worker-{processes}p{tag}.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "decisions.cli.main", "worker", "--processes",
                             str(processes)], cwd=cwd,
                            env=worker_env(urls, topic, group, partitions, **(extra_env or {})),
                            stdout=log, stderr=subprocess.STDOUT)
    watcher = KafkaConsumer(bootstrap_servers=urls["kafka_bootstrap"], group_id=group,
                            enable_auto_commit=False)
    first_at = first_count = None
    done = 0
    deadline = time.monotonic() + max_seconds + 30
    pids = {"worker": proc.pid, **services}
    cpu_start: dict[str, float] = {}
    cpu_end: dict[str, float] = {}
    try:
        while time.monotonic() < deadline:
            done = committed(watcher, topic, partitions)
            now = time.perf_counter()
            if done and first_at is None:
                first_at, first_count = now, done
                cpu_start = tree_cpu(pids)
                deadline = time.monotonic() + max_seconds
            if done >= total:
                break
            time.sleep(0.25)
        end = time.perf_counter()
        cpu_end = tree_cpu(pids)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        watcher.close()
        log.close()
    if first_at is None or first_count is None or end <= first_at or done <= first_count:
        return 0.0, done, 0.0, {}
    per_event = {name: (cpu_end[name] - cpu_start.get(name, 0.0)) / (done - first_count) * 1e6
                 for name in cpu_end}
    return (done - first_count) / (end - first_at), done, end - first_at, per_event


def latency(urls: dict[str, str], records: list[tuple[str, bytes]], rate: int, seconds: float,
            log_dir: Path, dump: list[tuple[Any, ...]] | None = None,
            ) -> tuple[list[float], int]:
    """Produce at ``rate`` events/s (the shop stream plus probes); a probe is a cart
    event that makes the high-value-cart rule fire for a fresh user; measure from its
    send to the offer being visible (``decisions.runtime.offers.active_offers``, what the API
    reads). A probe still without an offer 10 s after the end counts as lost (late)."""
    reset(urls)
    topic = "bench-live-" + uuid.uuid4().hex[:6]
    settings = Settings.from_env({}).with_services(**urls)
    from dataclasses import replace
    ensure_topics(replace(settings, events_topic=topic, actions_topic=topic + ".actions",
                          dead_letter_topic=topic + ".dlq", topic_partitions=6))
    group = "bench-live-" + uuid.uuid4().hex[:6]
    log = open(log_dir / "worker-latency.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "decisions.cli.main", "worker"], cwd=ROOT,
                            env=worker_env(urls, topic, group), stdout=log,
                            stderr=subprocess.STDOUT)
    producer = KafkaProducer(bootstrap_servers=urls["kafka_bootstrap"], linger_ms=1, acks="all")
    client = redis.Redis.from_url(urls["redis_url"])
    pending: dict[str, float] = {}
    acks: dict[str, float] = {}
    results: list[float] = []
    lock = threading.Lock()
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            with lock:
                users = list(pending.items())
            if users:
                pipe = client.pipeline(transaction=False)
                for user, _ in users:
                    pipe.hlen(f"d:offers:{{{user}}}")
                found = pipe.execute()
                now = time.perf_counter()
                for (user, sent), n in zip(users, found, strict=True):
                    if n:
                        offers = active_offers(client, user, datetime.now(UTC))
                        if offers:
                            with lock:
                                pending.pop(user, None)
                            results.append(now - sent)
                            if dump is not None:
                                dump.append((user, time.time() - (time.perf_counter() - sent),
                                             now - sent))
            time.sleep(0.001)

    def now_ts() -> str:
        return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def probe(user: str, kind: str) -> bytes:
        props: dict[str, Any] = ({"page": "checkout"} if kind == "page_view" else
                                 {"product_id": "p-probe", "price": 250.0, "quantity": 1})
        return orjson.dumps({"event_id": uuid.uuid4().hex, "type": kind, "user_id": user,
                             "ts": now_ts(), "properties": props})

    # warm up: wait until the worker has joined and decides
    try:
        for i in range(200):
            producer.send(topic, key=f"warm-{i}".encode(), value=probe(f"warm-{i}", "page_view"))
            producer.send(topic, key=f"warm-{i}".encode(), value=probe(f"warm-{i}", "add_to_cart"))
            producer.flush()
            if client.hlen("d:offers:{warm-0}"):
                break
            time.sleep(0.1)
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        tick = 0.01
        per_tick = rate * tick
        probe_every = 50  # one probe pair in 50 events: ~20 probes/s
        sent = 0
        started = time.perf_counter()
        src = iter(records)
        credit = 0.0
        while time.perf_counter() - started < seconds:
            credit += per_tick
            while credit >= 1:
                credit -= 1
                sent += 1
                if sent % probe_every == 0:
                    user = f"probe-{sent}"
                    producer.send(topic, key=user.encode(), value=probe(user, "page_view"))
                elif sent % probe_every == 1 and sent > 1:
                    user = f"probe-{sent - 1}"
                    with lock:
                        pending[user] = time.perf_counter()
                    fut = producer.send(topic, key=user.encode(), value=probe(user, "add_to_cart"))
                    fut.add_callback(lambda _, u=user: acks.__setitem__(u, time.time()))
                else:  # the shop stream as generated (Redis was reset: all new again)
                    key, value = next(src)
                    producer.send(topic, key=key.encode(), value=value)
            target = started + tick * (int((time.perf_counter() - started) / tick) + 1)
            time.sleep(max(0.0, target - time.perf_counter()))
        producer.flush()
        wait_until = time.monotonic() + 10
        while pending and time.monotonic() < wait_until:
            time.sleep(0.05)
        achieved = sent / (time.perf_counter() - started)
    finally:
        stop.set()
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        producer.close()
        log.close()
    lost = len(pending)
    if dump is not None:
        dump[:] = [(u, s, lat, acks.get(u, 0.0)) for u, s, lat in dump]
    print(f"  latency phase: {sent} events at {achieved:,.0f}/s, {len(results)} probes, "
          f"{lost} without an offer after 10 s")
    return results, lost


def redis_top(url: str, events: int, n: int = 8) -> str:
    """Where Redis spent its time since the last reset: µs per event by command
    (commands called by scripts are counted under their own name too)."""
    totals: Counter[str] = Counter()
    calls_by: Counter[str] = Counter()
    for client in redis_nodes(url):  # every node of a cluster, summed
        for k, v in client.info("commandstats").items():
            totals[k] += v["usec"]
            calls_by[k] += v["calls"]
        client.close()
    rows = sorted(((usec, k.removeprefix("cmdstat_"), calls_by[k])
                   for k, usec in totals.items()), reverse=True)[:n]
    return ", ".join(f"{name} {usec / events:.1f} µs ({calls / events:.2f}/event)"
                     for usec, name, calls in rows)


def decision_counts(url: str, events: int) -> str:
    """Decision rows of the phase by kind, recommendations superseded within their batch
    apart (logged, not computed or published)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT kind, payload ? 'superseded_by', count(*) FROM decisions GROUP BY 1, 2"
            " ORDER BY 1, 2").fetchall()
    return ", ".join(f"{kind}{' superseded' if sup else ''} {n / events:.3f}/event"
                     for kind, sup, n in rows)


def load() -> str:
    """The 1-minute load average: other work on the box skews every figure."""
    return f"{os.getloadavg()[0]:.1f}"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "kernel": platform.release()}


def tracing_overhead(urls: dict[str, str], settings: Settings, records: list[tuple[str, bytes]],
                     modes: list[str], rounds: int, max_seconds: float, log_dir: Path,
                     service_pids: dict[str, int], baseline: Path | None = None,
                     ) -> dict[str, list[dict[str, Any]]]:
    """One worker process per mode (``off``, or a share of sampled records; ``base``: the
    worker of the checkout ``baseline``, e.g. ``git archive <commit> | tar -x -C DIR``,
    run from there with this interpreter), the modes alternating round after round: CPU
    per event of the worker beside each other."""
    from dataclasses import replace

    sink = OtlpSink()
    topics: dict[str, str] = {}
    for mode in modes:
        topic = f"bench-trace-{mode.replace('.', '_')}-{uuid.uuid4().hex[:6]}"
        ensure_topics(replace(settings, events_topic=topic, actions_topic=topic + ".actions",
                              dead_letter_topic=topic + ".dlq", topic_partitions=6))
        produce(urls["kafka_bootstrap"], topic, records,
                None if mode in ("off", "base") else float(mode))
        topics[mode] = topic
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for n in range(rounds):
        for mode in modes:
            extra = {} if mode == "base" else {"DECISIONS_TRACING": "off"} if mode == "off" \
                else {"DECISIONS_TRACING": "on", "DECISIONS_OTLP_ENDPOINT": sink.url}
            before = sink.spans
            cwd = baseline if mode == "base" and baseline is not None else ROOT
            rate, done, elapsed, cpu = worker_rate(
                urls, topics[mode], len(records), 1, max_seconds, log_dir, service_pids,
                extra, tag=f"-trace-{mode}-{n}", cwd=cwd)
            spans = sink.spans - before
            results[mode].append({"rate": rate, "done": done, "cpu_us": cpu, "spans": spans})
            print(f"  tracing {mode:>4}, round {n + 1}: {rate:,.0f} events/s, worker CPU "
                  f"{cpu.get('worker', 0):,.1f} µs/event, total "
                  f"{sum(cpu.values()):,.1f} µs/event; {spans:,} spans exported "
                  f"(load average {load()})")
    print("tracing overhead, worker CPU per event (median of rounds): " + "; ".join(
        f"{mode}: {statistics.median(r['cpu_us'].get('worker', 0) for r in rs):,.1f} µs"
        for mode, rs in results.items()))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--rate", type=int, default=1000, help="events/s of the latency phase")
    parser.add_argument("--latency-seconds", type=float, default=30)
    parser.add_argument("--max-seconds", type=float, default=150,
                        help="bound on each throughput phase")
    parser.add_argument("--skip", default="", help="comma list: raw,durable,w1,w2,latency")
    parser.add_argument("--tracing", default="",
                        help="comma list of tracing modes to compare with one process: off, "
                             "or a share of records sampled (e.g. off,0.1,1)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of --tracing")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="with --tracing base,...: a checkout of the commit to compare")
    parser.add_argument("--processes", default="1,2",
                        help="comma list of worker process counts to measure (default 1,2)")
    parser.add_argument("--redis", default="single",
                        help="comma list: single (one Redis), cluster (a 3-node Redis Cluster;"
                             " DECISIONS_REDIS_CLUSTER_URL or embedded); each count is run "
                             "on each, alternating")
    parser.add_argument("--partitions", type=int, default=6,
                        help="partitions of the events topic (default 6)")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    var = ROOT / "var" / "bench-worker"
    log_dir = var / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    info = machine()
    print(f"machine: {info['nproc']} cores, {info['cpu']}, Python {info['python']}, "
          f"load average {load()}")
    t0 = time.perf_counter()
    records = generate(args.events, args.users)
    mix = Counter(orjson.loads(v)["type"] for _, v in records)
    print(f"generated {len(records):,} events from {len({k for k, _ in records}):,} users in "
          f"{time.perf_counter() - t0:.1f}s; mix: "
          + ", ".join(f"{k} {v / len(records):.1%}" for k, v in mix.most_common()))
    urls, stack = services(var / "stack")
    service_pids = {} if stack is None else {
        c.name.split(" ")[0]: c.pid for c in stack.children}
    redis_modes = [m for m in args.redis.split(",") if m]
    redis_urls = {"single": urls["redis_url"]}
    cluster = None
    if "cluster" in redis_modes:
        redis_urls["cluster"] = os.environ.get("DECISIONS_REDIS_CLUSTER_URL", "")
        if not redis_urls["cluster"]:
            cluster = EmbeddedCluster(var / "cluster")
            redis_urls["cluster"] = cluster.start(3)
            for i, node in enumerate(cluster.nodes):
                assert node.child is not None
                service_pids[f"Redis-node{i}"] = node.child.pid
    out: dict[str, Any] = {"machine": info, "events": len(records), "users": args.users,
                           "mix": dict(mix)}
    try:
        topic = "bench-" + uuid.uuid4().hex[:6]
        settings = Settings.from_env({}).with_services(**urls)
        from dataclasses import replace
        ensure_topics(replace(settings, events_topic=topic, actions_topic=topic + ".actions",
                              dead_letter_topic=topic + ".dlq",
                              topic_partitions=args.partitions))
        out["produce_rate"] = produce(urls["kafka_bootstrap"], topic, records)
        print(f"produce (kafka-python, acks=all): {out['produce_rate']:,.0f} events/s")
        if "raw" not in skip:
            out["raw_consume_rate"] = raw_consume_rate(urls["kafka_bootstrap"], topic, len(records))
            print(f"raw kafka-python consume: {out['raw_consume_rate']:,.0f} records/s")
        if "durable" not in skip:
            raw, ours = durable_rates(records)
            out["raw_durable_rate"], out["engine_rate"] = raw, ours
            print(f"raw durable_rules (2 rules, assert+retract): {raw:,.0f} facts/s; "
                  f"our engine, starter rulesets (6 rules): {ours:,.0f} events/s")
        counts = [int(n) for n in args.processes.split(",") if n]
        for n in counts:
            if f"w{n}" in skip:
                continue
            for mode in redis_modes:  # alternating: drift of the box hits each alike
                phase = {**urls, "redis_url": redis_urls[mode]}
                pids = {k: v for k, v in service_pids.items()  # this phase's Redis only
                        if k not in (("Redis",) if mode == "cluster" else ())
                        and (mode == "cluster" or not k.startswith("Redis-node"))}
                name = f"worker_{n}p" + ("" if mode == "single" else f"_{mode}")
                rate, done, elapsed, cpu = worker_rate(
                    phase, topic, len(records), n, args.max_seconds, log_dir, pids,
                    partitions=args.partitions, tag="" if mode == "single" else f"-{mode}")
                out[f"{name}_rate"] = rate
                out[f"{name}_cpu_us_per_event"] = cpu
                print(f"worker, {n} process{'es' if n > 1 else ''}, Redis {mode}: {rate:,.0f} "
                      f"events/s sustained ({done:,} committed in {elapsed:.1f}s; "
                      f"load average {load()})")
                if cpu:
                    print("  CPU per event: "
                          + ", ".join(f"{k} {v:,.0f} µs" for k, v in cpu.items())
                          + f" (total {sum(cpu.values()):,.0f} µs)")
                if done:
                    print("  Redis, per event: " + redis_top(phase["redis_url"], done))
                    print("  decisions logged: " + decision_counts(urls["database_url"], done))
        if args.tracing:
            out["tracing"] = tracing_overhead(urls, settings, records, args.tracing.split(","),
                                              args.rounds, args.max_seconds, log_dir,
                                              service_pids, args.baseline)
        if "latency" not in skip:
            probes: list[tuple[Any, ...]] = []
            lat, lost = latency(urls, records, args.rate, args.latency_seconds, log_dir, probes)
            # per probe: user, sent (epoch s), latency (s), broker ack (epoch s): to line up
            # with a worker-side trace
            (var / "probes.json").write_text(json.dumps(probes) + "\n")
            if lat:
                out["latency_ms"] = {"p50": pct(lat, 0.5) * 1000, "p99": pct(lat, 0.99) * 1000,
                                     "mean": statistics.mean(lat) * 1000, "probes": len(lat),
                                     "lost": lost, "rate": args.rate}
                print(f"produce-to-offer-visible at {args.rate}/s: p50 "
                      f"{out['latency_ms']['p50']:.1f} ms, p90 {pct(lat, 0.9) * 1000:.1f} ms, "
                      f"p99 {out['latency_ms']['p99']:.1f} ms, max {max(lat) * 1000:.1f} ms "
                      f"({len(lat)} probes; load average {load()})")
    finally:
        if cluster is not None:
            cluster.stop()
            shutil.rmtree(var / "cluster", ignore_errors=True)
        if stack is not None:
            stack.stop()
            shutil.rmtree(var / "stack", ignore_errors=True)
    (var / "result.json").write_text(json.dumps(out, indent=2) + "\n")
    print("targets: >= 5,000 events/s for one worker process; p99 < 100 ms at 1,000 events/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
