"""The one typed settings object, read from the environment (``DECISIONS_*``).

Every setting is documented in ``docs/settings.md``; ``tests/test_docs.py`` checks that.
A URL that is set means "use this real service and start nothing"; an unset URL lets
``decisions up`` start the embedded default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from decisions.core import transport, urls
from decisions.core.errors import ConfigError

PREFIX = "DECISIONS_"


class Secret(str):
    """A string that never shows itself in logs or reprs."""

    def __repr__(self) -> str:
        return "Secret('**********')"


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    redis_url: str | None = None
    kafka_bootstrap: str | None = None
    var_dir: Path = Path("var")
    events_topic: str = "user-events"
    actions_topic: str = "decisions.actions"
    dead_letter_topic: str = "user-events.dlq"
    topic_partitions: int = 6
    topic_replication_factor: int = 1  # of the topics the product creates (#20)
    group_id: str = "decisions-worker"
    batch_size: int = 500
    poll_timeout_ms: int = 200
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 2000
    max_event_bytes: int = 64 * 1024
    event_max_age_seconds: int = 48 * 3600
    event_max_future_seconds: int = 300
    dedup_ttl_seconds: int = 48 * 3600
    offer_ttl_seconds: int = 24 * 3600
    reload_interval_seconds: float = 1.0
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    log_level: str = "INFO"
    secret_key: Secret = field(default_factory=lambda: Secret("dev-insecure-change-me"))
    max_batch_events: int = 500
    redis_timeout_ms: int = 50
    redis_cluster: str = "auto"  # #20: auto | yes | no (decisions.core.resp.cluster)
    cors_origins: tuple[str, ...] = ()
    rate_limit_per_second: float = 200.0
    rate_limit_burst: int = 400
    api_cache_max_age: int = 5
    api_gzip_min_bytes: int = 1024
    api_max_body_bytes: int = 1024 * 1024
    api_fallback_file: str = ""
    apikey_cache_seconds: float = 10.0
    catalog_refresh_seconds: float = 5.0
    breaker_failures: int = 3
    breaker_reset_seconds: float = 2.0
    database_timeout_ms: int = 500
    kafka_ack_timeout_seconds: float = 5.0
    event_retention_days: int = 400
    erasure_tombstone_days: int = 7
    admin_session_seconds: int = 8 * 3600
    admin_login_max_failures: int = 5
    admin_login_max_failures_per_address: int = 20
    admin_login_lockout_seconds: int = 900
    worker_metrics_port: int = 0
    worker_metrics_host: str = "127.0.0.1"
    worker_fetch_max_bytes: int = 4 * 1024 * 1024
    worker_fetch_max_wait_ms: int = 25
    worker_retry_max_seconds: float = 5.0
    worker_lag_interval_seconds: float = 5.0
    # offer economics (#19): offers per shopper across every ruleset (0: no cap)
    offer_cap_per_day: int = 0
    offer_cap_per_week: int = 0
    uplift_window_days: float = 7.0
    currency: str = "USD"
    # --- #21: the API's server and encryption in transit (docs/settings.md, "Transport") ---
    api_server: str = "uvicorn"  # uvicorn (HTTP/1.1) | hypercorn (HTTP/1.1, h2c, h2 over TLS)
    api_tls_certfile: str = ""  # PEM certificate (chain): the API serves HTTPS
    api_tls_keyfile: str = ""
    redis_tls_ca_file: str = ""  # for rediss:// URLs
    redis_tls_certfile: str = ""  # client certificate, when Redis asks for one
    redis_tls_keyfile: str = ""
    database_sslmode: str = ""  # libpq: disable | require | verify-ca | verify-full ...
    database_sslrootcert: str = ""
    database_sslcert: str = ""
    database_sslkey: str = ""
    kafka_security_protocol: str = "PLAINTEXT"  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    kafka_ssl_cafile: str = ""
    kafka_ssl_certfile: str = ""
    kafka_ssl_keyfile: str = ""
    kafka_sasl_mechanism: str = ""  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    kafka_sasl_username: str = ""
    kafka_sasl_password: Secret = field(default_factory=lambda: Secret(""))
    # --- #21: distributed tracing (decisions.core.tracing; docs/settings.md, "Tracing") ---
    tracing: str = "off"  # off | on: OpenTelemetry spans exported by OTLP/HTTP
    tracing_sample_ratio: float = 0.01  # of the POST /v1/events requests (workers follow)
    otlp_endpoint: str = ""  # e.g. http://jaeger:4318 ("": OTEL_EXPORTER_OTLP_* or :4318)

    def __post_init__(self) -> None:
        """The TLS settings of PostgreSQL and Redis live in their URLs (``transport``), so
        every client built from ``database_url`` / ``redis_url`` encrypts as configured."""
        object.__setattr__(self, "database_url", transport.database_url(
            self.database_url, self.database_sslmode, self.database_sslrootcert,
            self.database_sslcert, self.database_sslkey))
        object.__setattr__(self, "redis_url", transport.redis_url(
            self.redis_url, self.redis_tls_ca_file, self.redis_tls_certfile,
            self.redis_tls_keyfile))

    def __repr__(self) -> str:
        """Every field, with the passwords of service URLs hidden (secrets are ``Secret``)."""
        from decisions.core.db import redact

        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("database_url", "redis_url"):
            if shown[name]:
                shown[name] = redact(str(shown[name]))
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            key = PREFIX + f.name.upper()
            if key not in env or env[key] == "":
                continue
            raw = env[key]
            values[f.name] = _convert(key, raw, f.default if f.default is not field else None, f)
            if f.name in URL_CHECKS:
                URL_CHECKS[f.name](raw, key)
        values.update(overrides)
        return cls(**values)

    def with_services(self, **urls: Any) -> Settings:
        return replace(self, **urls)


def _convert(key: str, raw: str, default: Any, f: Any) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "Path":
            return Path(raw)
        if kind == "Secret":
            return Secret(raw)
        if kind.startswith("tuple"):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"{key}={raw!r}: expected {kind}") from None
    return raw


URL_CHECKS = {
    "database_url": urls.check_database_url,
    "redis_url": urls.check_redis_url,
    "kafka_bootstrap": urls.check_kafka_bootstrap,
}
SETTING_NAMES = [PREFIX + f.name.upper() for f in fields(Settings)]
