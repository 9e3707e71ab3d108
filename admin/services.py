"""Shared clients of the admin app, opened lazily on first use.

The admin runs mounted inside the storefront API (whose lifespan is the only one that
runs), so it cannot rely on a lifespan of its own: the factory builds this holder and the
first request that needs PostgreSQL or Redis opens the client.
"""

from __future__ import annotations

import threading
from functools import cached_property

import redis
from sqlalchemy import Engine
from starlette.requests import Request

from admin.backtest import BacktestRegistry
from admin.throttle import LoginThrottle
from decisions.db import make_engine
from decisions.engine import RuleEngine
from decisions.errors import ConfigError
from decisions.settings import Settings
from rulesets.store import RulesetStore


class AdminServices:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        # durable_rules' C core has no locks: every evaluation the admin runs holds this
        self.engine_lock = threading.Lock()
        self.backtests = BacktestRegistry()

    @cached_property
    def db(self) -> Engine:
        with self._lock:
            if not self.settings.database_url:
                raise ConfigError("the admin needs DECISIONS_DATABASE_URL "
                                  "(or a running `decisions up`)")
            return make_engine(self.settings.database_url, pool_size=3)

    @cached_property
    def redis(self) -> redis.Redis:
        with self._lock:
            if not self.settings.redis_url:
                raise ConfigError("the admin needs DECISIONS_REDIS_URL "
                                  "(or a running `decisions up`)")
            return redis.Redis.from_url(self.settings.redis_url, socket_timeout=5,
                                        socket_connect_timeout=2)

    @cached_property
    def store(self) -> RulesetStore:
        return RulesetStore(self.db)

    @cached_property
    def throttle(self) -> LoginThrottle:
        return LoginThrottle(self.redis, self.settings.admin_login_max_failures,
                             self.settings.admin_login_lockout_seconds)

    @cached_property
    def rule_engine(self) -> RuleEngine:
        """One durable_rules host for the admin process; use it under ``engine_lock``."""
        return RuleEngine()

    def close(self) -> None:
        if "db" in self.__dict__:
            self.db.dispose()
        if "redis" in self.__dict__:
            self.redis.close()


def services(request: Request) -> AdminServices:
    svc: AdminServices = request.app.state.admin
    return svc
