"""API keys (create, list, revoke, verify), scopes, rate limiting and CORS."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest
from sqlalchemy import Engine, select
from starlette.testclient import TestClient

from api.app import create_app
from api.auth import authenticate_header
from api.state import ApiState
from decisions.cli.main import main
from decisions.core.errors import NotFound, Unauthorized, ValidationError
from decisions.core.models import ApiKey
from decisions.core.settings import Settings
from decisions.runtime import apikeys
from tests.api_helpers import KeyMaker, auth

pytest_plugins = ["tests.api_fixtures"]



def test_keys_are_stored_hashed_and_verified(clean_db: Engine) -> None:
    key, info = apikeys.create_key(clean_db, "shop", ["offers:read"])
    assert key.startswith(f"dk_{info.prefix}_") and len(key) > 50
    with clean_db.connect() as conn:
        stored = conn.execute(select(ApiKey.key_hash, ApiKey.prefix)).one()
    assert key not in stored.key_hash and stored.key_hash == apikeys.hash_key(key)
    assert apikeys.lookup(clean_db, key).scopes == ("offers:read",)
    with pytest.raises(Unauthorized):
        apikeys.lookup(clean_db, key[:-2] + "xx")
    with pytest.raises(Unauthorized):
        apikeys.lookup(clean_db, "dk_nope")
    apikeys.revoke_key(clean_db, info.prefix)
    with pytest.raises(Unauthorized, match="revoked"):
        apikeys.lookup(clean_db, key)
    with pytest.raises(NotFound):
        apikeys.revoke_key(clean_db, "zzzzzzzz")
    with pytest.raises(ValidationError):
        apikeys.create_key(clean_db, "shop", ["write-everything"])


def test_cli_create_list_revoke(
    settings: Settings, clean_db: Engine, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DECISIONS_DATABASE_URL", str(settings.database_url))
    monkeypatch.setenv("DECISIONS_VAR_DIR", str(settings.var_dir))
    assert main(["apikeys", "create", "web shop", "--scope", "offers:read",
                 "--scope", "admin"]) == 0
    key = capsys.readouterr().out.splitlines()[0]
    info = apikeys.lookup(clean_db, key)
    assert info.scopes == ("offers:read", "admin") and info.name == "web shop"
    assert main(["apikeys", "list"]) == 0
    listing = capsys.readouterr().out
    assert info.prefix in listing and "active" in listing and key not in listing
    assert main(["apikeys", "revoke", info.prefix]) == 0
    capsys.readouterr()
    assert main(["apikeys", "list", "--active"]) == 0
    assert info.prefix not in capsys.readouterr().out
    assert main(["apikeys", "revoke", "nosuchkey"]) == 1
    assert "no API key" in capsys.readouterr().err


def test_401_and_403_are_json(client: TestClient, make_key: KeyMaker) -> None:
    cases = {
        "missing": {},
        "scheme": {"Authorization": "Basic abc"},
        "malformed": auth("not-a-key"),
        "unknown": auth("dk_abcdefgh_" + "x" * 43),
    }
    for name, headers in cases.items():
        resp = client.get("/v1/users/u-1/offers", headers=headers)
        assert resp.status_code == 401, name
        assert resp.json()["error"]["code"] == "unauthorized"
        assert resp.headers["www-authenticate"].startswith("Bearer")
    writer = make_key("events:write")
    resp = client.get("/v1/users/u-1/offers", headers=auth(writer))
    assert resp.status_code == 403
    assert resp.json() == {"error": {"code": "forbidden",
                                     "message": "this API key lacks the 'offers:read' scope"}}
    reader = make_key("offers:read")
    assert client.post("/v1/events", json={}, headers=auth(reader)).status_code == 403
    assert client.delete("/v1/users/u-1", headers=auth(reader)).status_code == 403
    assert client.get("/v1/users/u-1/export", headers=auth(writer)).status_code == 403
    admin = make_key("admin")  # admin implies every scope
    assert client.get("/v1/users/u-1/offers", headers=auth(admin)).status_code == 200


def test_revocation_reaches_the_api_after_the_cache_time(
    api_settings: Settings, demo_catalog: object, clean_db: Engine
) -> None:
    key, info = apikeys.create_key(clean_db, "shop", ["offers:read"])
    app = create_app(replace(api_settings, apikey_cache_seconds=0.3))
    with TestClient(app) as test_client:
        assert test_client.get("/v1/users/u/offers", headers=auth(key)).status_code == 200
        apikeys.revoke_key(clean_db, info.prefix)
        assert test_client.get("/v1/users/u/offers", headers=auth(key)).status_code == 200
        time.sleep(0.35)
        assert test_client.get("/v1/users/u/offers", headers=auth(key)).status_code == 401


def test_rate_limit_per_key(api_settings: Settings, demo_catalog: object,
                            make_key: KeyMaker) -> None:
    limited = replace(api_settings, rate_limit_per_second=1.0, rate_limit_burst=3)
    key, other = make_key("offers:read"), make_key("offers:read")
    with TestClient(create_app(limited)) as test_client:
        codes = [test_client.get("/v1/users/u/offers", headers=auth(key)).status_code
                 for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        resp = test_client.get("/v1/users/u/recommendations", headers=auth(key))
        assert resp.status_code == 429
        assert resp.json()["error"]["code"] == "rate_limited"
        assert resp.headers["retry-after"] == "1"
        # each key has its own bucket
        assert test_client.get("/v1/users/u/offers", headers=auth(other)).status_code == 200
        time.sleep(1.05)  # one token refilled
        assert test_client.get("/v1/users/u/offers", headers=auth(key)).status_code == 200
        metrics = test_client.get("/metrics").text
        assert "decisions_api_rate_limited_total 2.0" in metrics


def test_cors(api_settings: Settings, demo_catalog: object, make_key: KeyMaker) -> None:
    key = make_key("offers:read")
    app = create_app(replace(api_settings, cors_origins=("https://shop.example",)))
    with TestClient(app) as test_client:
        pre = test_client.options("/v1/users/u/offers", headers={
            "Origin": "https://shop.example", "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization"})
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == "https://shop.example"
        assert "authorization" in pre.headers["access-control-allow-headers"].lower()
        resp = test_client.get("/v1/users/u/offers",
                               headers={**auth(key), "Origin": "https://shop.example"})
        assert resp.headers["access-control-allow-origin"] == "https://shop.example"
        assert "etag" in resp.headers["access-control-expose-headers"].lower()
        other = test_client.get("/v1/users/u/offers",
                                headers={**auth(key), "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_concurrent_requests_share_one_key_lookup(
    api_settings: Settings, make_key: KeyMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When a busy key's cache entry expires, the requests in flight ask PostgreSQL once."""
    key = make_key("offers:read")
    calls: list[str] = []
    real_lookup = apikeys.lookup

    def counting_lookup(engine: Engine, raw: str) -> apikeys.KeyInfo:
        calls.append(raw)
        time.sleep(0.05)  # a query slow enough for every request to arrive meanwhile
        return real_lookup(engine, raw)

    monkeypatch.setattr(apikeys, "lookup", counting_lookup)

    async def scenario() -> None:
        state = ApiState.open(api_settings)
        try:
            header = f"Bearer {key}"
            infos = await asyncio.gather(*(authenticate_header(state, header, "offers:read")
                                           for _ in range(20)))
            assert {info.prefix for info in infos} == {infos[0].prefix}
            assert len(calls) == 1 and not state.verifying
            bad = await asyncio.gather(*(authenticate_header(state, header + "x", "offers:read")
                                         for _ in range(5)), return_exceptions=True)
            assert all(isinstance(e, Unauthorized) for e in bad) and len(calls) == 2
        finally:
            await state.stop()

    asyncio.run(scenario())
