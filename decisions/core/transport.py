"""Encryption in transit: the TLS (and SASL) settings folded into what each client takes.

- PostgreSQL: ``DECISIONS_DATABASE_SSL*`` become libpq parameters of the database URL
  (``?sslmode=verify-full&sslrootcert=...``), which psycopg and SQLAlchemy pass on;
- Redis: for a ``rediss://`` URL, ``DECISIONS_REDIS_TLS_*`` become redis-py's URL
  parameters (``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``), read by redis-py and by
  the API's own read client (``api.resp``);
- Kafka: :func:`kafka_options` gives kafka-python's ``security_protocol``, ``ssl_*`` and
  ``sasl_*`` options (the password stays a ``Secret`` until it reaches kafka-python).

A setting replaces the same parameter written in the URL; an empty setting leaves the
URL's own. A password a URL may hold is hidden
by ``decisions.core.db.redact`` wherever a URL is printed or stored.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

DATABASE_PARAMS = ("sslmode", "sslrootcert", "sslcert", "sslkey")
REDIS_PARAMS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


def with_params(url: str, params: dict[str, str]) -> str:
    """``url`` with the non-empty ``params`` set (replacing the same names in the URL)."""
    wanted = {k: v for k, v in params.items() if v}
    if not url or not wanted:
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if k not in wanted]
    query += list(wanted.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def database_url(url: str | None, sslmode: str, sslrootcert: str, sslcert: str,
                 sslkey: str) -> str | None:
    if not url:
        return url
    return with_params(url, dict(zip(DATABASE_PARAMS, (sslmode, sslrootcert, sslcert, sslkey),
                                     strict=True)))


def redis_url(url: str | None, ca_file: str, certfile: str, keyfile: str) -> str | None:
    if not url or not url.startswith("rediss://"):
        return url
    return with_params(url, dict(zip(REDIS_PARAMS, (ca_file, certfile, keyfile), strict=True)))


def redis_tls(url: str) -> dict[str, str]:
    """The ``ssl_*`` parameters of a ``rediss://`` URL (for clients that parse it themselves)."""
    return {k: v for k, v in parse_qsl(urlsplit(url).query) if k in REDIS_PARAMS}


def kafka_options(settings: Any) -> dict[str, Any]:
    """kafka-python client options for the configured security protocol (empty: plaintext)."""
    from decisions.core.errors import ConfigError

    protocol = (settings.kafka_security_protocol or "PLAINTEXT").upper()
    if protocol not in KAFKA_PROTOCOLS:
        raise ConfigError(f"DECISIONS_KAFKA_SECURITY_PROTOCOL={protocol!r}: expected one of "
                          + ", ".join(KAFKA_PROTOCOLS))
    if protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol.endswith("SSL"):
        for option, value in (("ssl_cafile", settings.kafka_ssl_cafile),
                              ("ssl_certfile", settings.kafka_ssl_certfile),
                              ("ssl_keyfile", settings.kafka_ssl_keyfile)):
            if value:
                options[option] = value
        options["ssl_check_hostname"] = True
    if protocol.startswith("SASL"):
        if not settings.kafka_sasl_mechanism or not settings.kafka_sasl_username:
            raise ConfigError(f"DECISIONS_KAFKA_SECURITY_PROTOCOL={protocol} needs "
                              "DECISIONS_KAFKA_SASL_MECHANISM and DECISIONS_KAFKA_SASL_USERNAME")
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism.upper()
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = str(settings.kafka_sasl_password)
    return options

