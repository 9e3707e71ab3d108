"""Shared clients of the admin app, opened lazily on first use.

The admin runs mounted inside the storefront API (whose lifespan is the only one that
runs), so it cannot rely on a lifespan of its own: the factory builds this holder and the
first request that needs PostgreSQL or Redis opens the client.
"""

from __future__ import annotations

import threading
import time
from functools import cached_property

import redis
from sqlalchemy import Engine
from starlette.requests import Request

from admin.throttle import LoginThrottle
from decisions.core.db import make_engine
from decisions.core.errors import ConfigError
from decisions.core.resp import cluster
from decisions.core.settings import Settings
from decisions.runtime.customers import seen_attributes
from decisions.runtime.engine import RuleEngine
from decisions.simulate.backtest import BacktestRegistry
from rulesets.store import RulesetStore

ATTRIBUTES_TTL = 10.0  # seconds the field picker's list of customer attributes is kept


class AdminServices:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._db: Engine | None = None
        self._redis: redis.Redis | None = None
        # durable_rules' C core has no locks (its calls hold the GIL, so calls on different
        # hosts never overlap, but one host's assert/retract pair must): backtests hold this
        self.engine_lock = threading.Lock()
        self.backtests = BacktestRegistry()
        self._attributes: tuple[float, dict[str, str]] = (-ATTRIBUTES_TTL, {})

    def customer_attributes(self) -> dict[str, str]:
        """Custom customer attributes seen in the customers table (name -> type), for the
        rule editor's field picker; read again after ``ATTRIBUTES_TTL`` seconds."""
        read_at, found = self._attributes
        if time.monotonic() - read_at >= ATTRIBUTES_TTL:
            found = seen_attributes(self.db)
            self._attributes = (time.monotonic(), found)
        return found

    @property
    def db(self) -> Engine:
        with self._lock:  # requests run in worker threads: open exactly one engine
            if self._db is None:
                if not self.settings.database_url:
                    raise ConfigError("the admin needs DECISIONS_DATABASE_URL "
                                      "(or a running `decisions up`)")
                self._db = make_engine(self.settings.database_url, pool_size=3)
            return self._db

    @property
    def redis(self) -> redis.Redis:
        with self._lock:
            if self._redis is None:
                if not self.settings.redis_url:
                    raise ConfigError("the admin needs DECISIONS_REDIS_URL "
                                      "(or a running `decisions up`)")
                self._redis = cluster.connect(self.settings.redis_url,
                                              self.settings.redis_cluster, socket_timeout=5,
                                              socket_connect_timeout=2)
            return self._redis

    @cached_property
    def store(self) -> RulesetStore:
        return RulesetStore(self.db)

    @cached_property
    def throttle(self) -> LoginThrottle:
        return LoginThrottle(self.redis, self.settings.admin_login_max_failures,
                             self.settings.admin_login_lockout_seconds,
                             self.settings.admin_login_max_failures_per_address)

    @cached_property
    def rule_engine(self) -> RuleEngine:
        """One durable_rules host for the admin process; use it under ``engine_lock``."""
        return RuleEngine()

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.dispose()
            if self._redis is not None:
                self._redis.close()
            self._db = self._redis = None


def services(request: Request) -> AdminServices:
    svc: AdminServices = request.app.state.admin
    return svc
