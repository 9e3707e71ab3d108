"""Fixtures for the storefront API tests (real PostgreSQL, Redis and broker).

Test modules load them with ``pytest_plugins = ["tests.api_fixtures"]``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import Engine
from starlette.testclient import TestClient

from api.app import create_app
from decisions.cli.demo_replay import DEMO_CATALOG
from decisions.core.settings import Settings
from decisions.runtime import apikeys, catalog
from tests.api_helpers import KeyMaker


@pytest.fixture
def api_settings(settings: Settings) -> Settings:
    return replace(settings, rate_limit_per_second=1000.0, rate_limit_burst=1000,
                   catalog_refresh_seconds=60.0)


@pytest.fixture
def demo_catalog(clean_db: Engine) -> list[catalog.CatalogProduct]:
    products = catalog.read_file(DEMO_CATALOG)
    catalog.upsert(clean_db, products)
    return products


@pytest.fixture
def make_key(clean_db: Engine) -> KeyMaker:
    def make(*scopes: str, name: str = "test storefront") -> str:
        key, _ = apikeys.create_key(clean_db, name, scopes or ("offers:read", "events:write"))
        return key

    return make


@pytest.fixture
def client(api_settings: Settings, demo_catalog: Any) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings)) as test_client:
        yield test_client
