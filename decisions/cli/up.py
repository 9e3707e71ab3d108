"""``decisions up``: the whole product on one machine.

Starts what is not configured (embedded PostgreSQL, Valkey, Tansu; data under var/),
migrates, imports the starter rulesets when the store is empty, starts the worker, serves
the storefront API with the admin UI at /admin, writes var/stack.json, and stops it all
on Ctrl-C or SIGTERM. A second ``up`` in the same folder reports the running one.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import redis

from decisions.cli import invocation, migrate
from decisions.cli.stack.embedded import EmbeddedStack
from decisions.cli.stack.process import Child, free_port, port_open
from decisions.core import stackfile
from decisions.core.db import check_database, make_engine, redact
from decisions.core.errors import ConfigError, DecisionsError, ServiceUnavailable
from decisions.core.resp import cluster
from decisions.core.settings import Settings
from decisions.runtime.kafka import check_reachable, ensure_topics

log = logging.getLogger(__name__)


def say(message: str, out: TextIO = sys.stdout) -> None:
    print(message, file=out, flush=True)


def check_redis(url: str) -> None:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        client.ping()
        client.close()
    except (redis.RedisError, OSError, ValueError) as exc:
        raise ServiceUnavailable(
            "Redis", redact(url), "DECISIONS_REDIS_URL", type(exc).__name__
        ) from None


def start_services(settings: Settings, stack: EmbeddedStack, redis_nodes: int = 0) -> Settings:
    """Use each configured service (checking it answers), start the others embedded
    (``redis_nodes``: an embedded Redis Cluster of that many nodes instead of one Redis)."""
    if settings.database_url:
        check_database(make_engine(settings.database_url, pool_size=1), settings.database_url)
        db = settings.database_url
    else:
        say("  starting PostgreSQL (embedded) ...")
        db = stack.start_postgres()
    if settings.redis_url:
        check_redis(settings.redis_url)
        cluster.verify(settings.redis_url, settings.redis_cluster)
        rd = settings.redis_url
    elif redis_nodes:
        say(f"  starting a Redis Cluster (embedded Valkey, {redis_nodes} nodes) ...")
        rd = stack.start_redis_cluster(redis_nodes)
    else:
        say("  starting Redis (embedded Valkey) ...")
        rd = stack.start_redis()
    if settings.kafka_bootstrap:
        check_reachable(settings)
        kb = settings.kafka_bootstrap
    else:
        say("  starting Kafka (embedded Tansu broker, in memory) ...")
        kb = stack.start_kafka()
    return replace(settings, database_url=db, redis_url=rd, kafka_bootstrap=kb)


def import_starters(settings: Settings) -> list[str]:
    from rulesets.document import read_file
    from rulesets.store import RulesetStore

    engine = make_engine(str(settings.database_url), pool_size=1)
    try:
        store = RulesetStore(engine)
        if not store.is_empty():
            return []
        names = []
        starter = Path(str(resources.files("rulesets").joinpath("starter")))
        for path in sorted(starter.glob("*.y*ml")) + sorted(starter.glob("*.json")):
            data, lines = read_file(path)
            store.import_document(
                data, "decisions-up", f"starter ruleset from {path.name}", lines=lines
            )
            names.append(str(data.get("name")))
        return names
    finally:
        engine.dispose()


def development_key(settings: Settings) -> str:
    """Reuse the development API key kept in var/ while it is valid, else make one."""
    from decisions.runtime import apikeys

    path = settings.var_dir / "dev-api-key"
    engine = make_engine(str(settings.database_url), pool_size=1)
    try:
        if path.exists():
            key = path.read_text().strip()
            try:
                apikeys.lookup(engine, key)
                return key
            except DecisionsError:
                pass
        key, _ = apikeys.create_key(
            engine, "development (decisions up)", ["offers:read", "events:write", "admin"]
        )
        path.write_text(key + "\n")
        os.chmod(path, 0o600)
        return key
    finally:
        engine.dispose()


def worker_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DECISIONS_DATABASE_URL": str(settings.database_url),
            "DECISIONS_REDIS_URL": str(settings.redis_url),
            "DECISIONS_KAFKA_BOOTSTRAP": str(settings.kafka_bootstrap),
        }
    )
    return env


def demo(settings: Settings, api_url: str, key: str) -> None:
    """Load the demo catalog, replay the sample stream, and show the first offers and
    recommendations."""
    from decisions.cli.demo_replay import (
        demo_users,
        load_catalog,
        load_customers,
        replay,
        report_feedback,
        reset_shoppers,
        sample_events,
    )
    from decisions.runtime.offers import active_offers

    engine = make_engine(str(settings.database_url), pool_size=1)
    try:
        say(f"  demo: {load_catalog(engine)} products in the catalog")
        say(f"  demo: {load_customers(engine)} customers with CRM attributes "
            "(tier, country, signup date, lifetime value; demo-1 and demo-2 are gold)")
    finally:
        engine.dispose()
    client = cluster.connect(str(settings.redis_url), settings.redis_cluster)
    if reset_shoppers(client, demo_users()):
        say("  demo: cleared the demo shoppers' state and offers of an earlier run")
    events = sample_events()
    # paced as a storefront's traffic would be (about 5 s), so what the first shoppers
    # click is learned before the later ones are recommended to
    sent = replay(settings, pace_seconds=DEMO_PACE_SECONDS, events=events)
    this_run = {e["event_id"] for e in events}
    say(f"  demo: replayed {sent} sample events through Kafka topic {settings.events_topic}")
    deadline = time.monotonic() + 60
    shown: set[str] = set()
    while time.monotonic() < deadline and len(shown) < 3:  # show the first few
        for user in demo_users():
            if user in shown:
                continue
            offers = [o for o in active_offers(client, user, datetime.now(UTC))
                      if o.get("event_id") in this_run]  # made by this replay
            if offers and len(shown) < 3:
                shown.add(user)
                o = offers[0]
                d = o.get("discount") or {}
                amount = (f"{d['value']}% off" if d.get("type") == "percent"
                          else f"${d['value']} off" if d else str(o.get("kind")))
                terms = o.get(str(o.get("kind"))) or {}
                say(
                    f"  offer for {user}: {amount}, code {terms.get('code', '-')} "
                    f"(rule {o['rule']}, ruleset {o['ruleset']} v{o['ruleset_version']})"
                )
        time.sleep(0.5)
    recommended: list[tuple[str, dict[str, Any]]] = []
    while time.monotonic() < deadline and not recommended:
        recommended = _demo_recommendations(client, demo_users())[:3]  # the fullest few
        if not recommended:
            time.sleep(0.5)
    for user, rec in recommended:
        say(f"  recommended for {user}: {', '.join(rec['products'])} "
            f"(strategy {rec.get('strategy')}, rule {rec.get('rule')}, slot {DEMO_SLOT})")
    now = datetime.now(UTC)
    made = [(user, o) for user in demo_users() for o in active_offers(client, user, now)
            if o.get("event_id") in this_run]
    client.close()
    impressions, redemptions = report_feedback(api_url, key, made)
    if impressions:
        say(f"  demo: the storefront showed {impressions} offers and {redemptions} were redeemed "
            "(see Performance in the admin UI)")
    if shown:
        first = sorted(shown)[0]
        say(
            f"\n  try it: curl -s -H 'Authorization: Bearer {key}' "
            f"{api_url}/v1/users/{first}/offers"
        )
    else:
        say("  demo: no offer visible yet; see var/worker.log")
    if recommended:
        say(
            f"  try it: curl -s -H 'Authorization: Bearer {key}' "
            f"'{api_url}/v1/users/{recommended[0][0]}/recommendations?slot={DEMO_SLOT}'"
        )
    else:
        say("  demo: no recommendation visible yet; see var/worker.log")


DEMO_PACE_SECONDS = 0.03
DEMO_SLOT = "product_page"  # the starter recommendations ruleset's browse-based slot


def _demo_recommendations(client: redis.Redis, users: list[str],
                          ) -> list[tuple[str, dict[str, Any]]]:
    """The demo shoppers' stored product-page recommendations, the longest lists first."""
    import orjson

    from decisions.core import keys

    pipe = client.pipeline(transaction=False)
    for user in users:
        pipe.hget(keys.recs(user), DEMO_SLOT)
    found = []
    for n, (user, raw) in enumerate(zip(users, pipe.execute(), strict=True)):
        rec = orjson.loads(raw) if raw else {}
        if rec.get("products"):
            found.append((-len(rec["products"]), n, user, rec))
    return [(user, rec) for _, _, user, rec in sorted(found)]


class Up:
    def __init__(self, settings: Settings, *, with_demo: bool, host: str, port: int,
                 redis_nodes: int = 0) -> None:
        self.settings = settings
        self.redis_nodes = redis_nodes
        self.with_demo = with_demo
        self.host = host
        self.port = port
        self.stack = EmbeddedStack(settings.var_dir)
        self.worker: Child | None = None
        self._lock_file: Any = None

    def acquire(self) -> bool:
        self.settings.var_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.settings.var_dir / "up.lock", "w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def run(self) -> int:
        if not self.acquire():
            data = stackfile.read(self.settings) or {}
            say(
                f"decisions is already running in {self.settings.var_dir.resolve()} "
                f"(pid {data.get('pid', '?')}):"
            )
            for k in ("api_url", "admin_url"):
                if k in data:
                    say(f"  {k}: {data[k]}")
            say("Stop it with Ctrl-C in its terminal (or kill -TERM that pid) first.")
            return 1
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        try:
            return self._run()
        except KeyboardInterrupt:
            return 0
        finally:
            self.shutdown()

    def _run(self) -> int:
        if self.port and port_open(self.host, self.port):
            raise ConfigError(
                f"port {self.port} on {self.host} is already in use; choose another with "
                "--port (0 = any free port) or DECISIONS_API_PORT"
            )
        say("decisions: starting")
        self._started = True
        settings = start_services(self.settings, self.stack, self.redis_nodes)
        say("  migrating the schema (alembic upgrade head) ...")
        migrate.upgrade(str(settings.database_url))
        ensure_topics(settings)
        imported = import_starters(settings)
        if imported:
            say(f"  imported starter rulesets as version 1: {', '.join(imported)}")
        key = development_key(settings)
        port = self.port or free_port(self.host)
        from api.servers import check, scheme

        check(settings)
        api_url = f"{scheme(settings)}://{self.host}:{port}"
        say("  starting the worker ...")
        self.worker = Child(
            "worker",
            [sys.executable, "-m", "decisions.cli.main", "worker"],
            settings.var_dir / "worker.log",
            env=worker_env(settings),
        )
        server, thread = self.serve(settings, port)
        data = {
            "pid": os.getpid(),
            "api_url": api_url,
            "admin_url": f"{api_url}/admin",
            "database_url": settings.database_url,
            "redis_url": settings.redis_url,
            "kafka_bootstrap": settings.kafka_bootstrap,
            "api_key": key,
            "started_at": datetime.now(UTC).isoformat(),
        }
        path = stackfile.write(self.settings, data)
        cmd = invocation.command()
        hint = invocation.path_hint()
        say(f"""
decisions is up.
  storefront API  {api_url}/v1/...   (OpenAPI: {api_url}/openapi.json)
  admin UI        {api_url}/admin    (create a user: {cmd} users create NAME --role admin)
  PostgreSQL      {redact(str(settings.database_url))}
  Redis           {redact(str(settings.redis_url))}
  Kafka           {settings.kafka_bootstrap}  (topic {settings.events_topic})
  API key (dev)   {key}
  stack file      {path}
Logs are in {self.settings.var_dir}/. Press Ctrl-C to stop.""")
        if hint:
            say(f"  {hint}")
        say("")
        if self.with_demo:
            demo(settings, api_url, key)
        while thread.is_alive():
            if self.worker.proc.poll() is not None:
                say(
                    f"decisions: the worker exited (code {self.worker.proc.returncode}); "
                    f"see {self.worker.log_path}"
                )
                server.stop(10)
                return 1
            thread.join(0.5)
        return 0

    def serve(self, settings: Settings, port: int) -> tuple[Any, Any]:
        from starlette.routing import Mount

        from admin.app import create_app as create_admin
        from api.app import create_app
        from api.servers import ServerThread

        routes: list[Any] = [Mount("/admin", app=create_admin(settings), name="admin")]
        app = create_app(settings, extra_routes=routes)
        server = ServerThread(app, settings, self.host, port).start()
        self._server = server
        return server, server

    def shutdown(self) -> None:
        server = getattr(self, "_server", None)
        if server is not None:
            server.stop(10)
        if self.worker is not None:
            self.worker.stop(timeout=15)
        self.stack.stop()
        data = stackfile.read(self.settings)
        if data and data.get("pid") == os.getpid():
            stackfile.stack_path(self.settings).unlink(missing_ok=True)
        if self._lock_file is not None:
            self._lock_file.close()
        if getattr(self, "_started", False):
            say("decisions: stopped")
