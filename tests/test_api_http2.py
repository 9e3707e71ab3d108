"""The API over HTTP/2 (hypercorn: h2c on a plain port, h2 over TLS by ALPN) and over
HTTPS with uvicorn, talked to with httpx; certificates from a throwaway CA (trustme)."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from api.app import create_app
from api.servers import ServerThread, port_open
from decisions.core.errors import ConfigError
from decisions.core.settings import Settings
from tests.api_helpers import KeyMaker, auth, offer, store_offer
from tests.helpers import ROOT, wait_for
from tests.test_worker_processes import free_ports

pytest_plugins = ["tests.api_fixtures"]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = {"certfile": tmp_path / "api.pem", "keyfile": tmp_path / "api.key",
             "ca": tmp_path / "ca.pem"}
    cert.cert_chain_pems[0].write_to_path(str(files["certfile"]))
    cert.private_key_pem.write_to_path(str(files["keyfile"]))
    ca.cert_pem.write_to_path(str(files["ca"]))
    return {k: str(v) for k, v in files.items()}


def serving(settings: Settings) -> Iterator[str]:
    port = free_ports(1)
    server = ServerThread(create_app(settings), settings, "127.0.0.1", port).start()
    try:
        yield f"{'https' if settings.api_tls_certfile else 'http'}://127.0.0.1:{port}"
    finally:
        server.stop()
    assert not server.is_alive()


def read_offers(client: httpx.Client, base: str, key: str) -> httpx.Response:
    r = client.get(f"{base}/v1/users/u-h2/offers", headers=auth(key))
    assert r.status_code == 200, r.text
    assert [o["rule"] for o in r.json()["offers"]] == ["h2-rule"]
    return r


@pytest.fixture
def stored(redis_client: Any, demo_catalog: Any) -> None:
    store_offer(redis_client, "u-h2", offer("u-h2", "h2-rule"))


def test_h2c_prior_knowledge(api_settings: Settings, make_key: KeyMaker, stored: None) -> None:
    key = make_key("offers:read")
    for base in serving(replace(api_settings, api_server="hypercorn")):
        with httpx.Client(http1=False, http2=True, timeout=5) as client:
            r = read_offers(client, base, key)
            assert r.http_version == "HTTP/2"
            assert client.get(f"{base}/healthz").http_version == "HTTP/2"
        with httpx.Client(timeout=5) as client:  # HTTP/1.1 clients are served as before
            assert read_offers(client, base, key).http_version == "HTTP/1.1"


def test_h2_over_tls(api_settings: Settings, make_key: KeyMaker, stored: None,
                     tls_files: dict[str, str]) -> None:
    key = make_key("offers:read")
    settings = replace(api_settings, api_server="hypercorn",
                       api_tls_certfile=tls_files["certfile"], api_tls_keyfile=tls_files["keyfile"])
    trusted = ssl.create_default_context(cafile=tls_files["ca"])
    for base in serving(settings):
        assert base.startswith("https://")
        with httpx.Client(http2=True, verify=trusted, timeout=5) as client:
            assert read_offers(client, base, key).http_version == "HTTP/2"  # chosen by ALPN
        with httpx.Client(http2=True, timeout=5) as client:  # a CA it does not know
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                client.get(f"{base}/healthz")


def test_uvicorn_serves_https(api_settings: Settings, make_key: KeyMaker, stored: None,
                              tls_files: dict[str, str]) -> None:
    key = make_key("offers:read")
    settings = replace(api_settings, api_tls_certfile=tls_files["certfile"],
                       api_tls_keyfile=tls_files["keyfile"])
    trusted = ssl.create_default_context(cafile=tls_files["ca"])
    for base in serving(settings):
        with httpx.Client(http2=True, verify=trusted, timeout=5) as client:
            assert read_offers(client, base, key).http_version == "HTTP/1.1"


def test_server_settings_are_checked(api_settings: Settings) -> None:
    with pytest.raises(ConfigError, match="DECISIONS_API_SERVER='gunicorn'"):
        ServerThread(None, replace(api_settings, api_server="gunicorn"), "127.0.0.1", 1)
    with pytest.raises(ConfigError, match="both DECISIONS_API_TLS_CERTFILE"):
        ServerThread(None, replace(api_settings, api_tls_certfile="x.pem"), "127.0.0.1", 1)


def granian(settings: Settings, port: int, *extra: str) -> subprocess.Popen[bytes]:
    """The command docs/operations.md gives for HTTP/2 at speed: granian serving
    ``api.serve:app`` (settings from the environment) in a process of its own."""
    env = {**os.environ, "DECISIONS_DATABASE_URL": str(settings.database_url),
           "DECISIONS_REDIS_URL": str(settings.redis_url),
           "DECISIONS_KAFKA_BOOTSTRAP": str(settings.kafka_bootstrap),
           "DECISIONS_VAR_DIR": str(settings.var_dir)}
    return subprocess.Popen(
        [sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "api.serve:app",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--log-level",
         "warning", "--no-access-log", *extra],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_granian_serves_h2c_and_h2(api_settings: Settings, make_key: KeyMaker, stored: None,
                                   tls_files: dict[str, str]) -> None:
    key = make_key("offers:read")
    plain_port = free_ports(2)
    tls_port = plain_port + 1
    plain = granian(api_settings, plain_port)
    secure = granian(api_settings, tls_port, "--ssl-certificate", tls_files["certfile"],
                     "--ssl-keyfile", tls_files["keyfile"], "--ssl-protocol-min", "tls1.2")
    trusted = ssl.create_default_context(cafile=tls_files["ca"])
    try:
        wait_for(lambda: port_open("127.0.0.1", plain_port)
                 and port_open("127.0.0.1", tls_port))
        assert plain.poll() is None and secure.poll() is None
        base = f"http://127.0.0.1:{plain_port}"
        with httpx.Client(http1=False, http2=True, timeout=5) as client:  # prior knowledge
            assert read_offers(client, base, key).http_version == "HTTP/2"
        with httpx.Client(timeout=5) as client:
            assert read_offers(client, base, key).http_version == "HTTP/1.1"
        with httpx.Client(http2=True, verify=trusted, timeout=5) as client:
            r = read_offers(client, f"https://127.0.0.1:{tls_port}", key)
            assert r.http_version == "HTTP/2"  # chosen by ALPN
    finally:
        for proc in (plain, secure):
            proc.terminate()
            proc.wait(20)
