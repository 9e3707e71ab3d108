"""What the API keeps in memory, refreshed in the background every few seconds.

- the catalog (from PostgreSQL ``products``), so recommendations never query PostgreSQL;
- the top-sellers snapshot (from Redis ``d:top:s{tp<n>}``, merged), the generic fallback
  products;
- the users whose consent is withdrawn in the ``customers`` table.

A failed refresh keeps the last good copy: an outage that starts after the first load
costs nothing on the read path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
from sqlalchemy import Engine, or_, select

from decisions.core.errors import ConfigError
from decisions.core.models import Customer
from decisions.runtime import catalog
from decisions.runtime.catalog import CatalogProduct


@dataclass
class Snapshot:
    products: dict[str, CatalogProduct] = field(default_factory=dict)
    in_stock: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> API object
    in_stock_json: dict[str, orjson.Fragment] = field(default_factory=dict)  # same, as JSON
    order: list[str] = field(default_factory=list)
    top_sellers: list[str] = field(default_factory=list)
    no_consent: frozenset[str] = frozenset()
    database_loaded: bool = False

    def set_catalog(self, products: list[CatalogProduct], no_consent: frozenset[str]) -> None:
        self.products = {p.product_id: p for p in products}
        self.in_stock = {p.product_id: p.to_api() for p in products if p.in_stock}
        self.in_stock_json = {pid: orjson.Fragment(orjson.dumps(product))
                              for pid, product in self.in_stock.items()}
        self.order = [p.product_id for p in products]
        self.no_consent = no_consent
        self.database_loaded = True

    def join(self, product_ids: list[str], limit: int, exclude: set[str] | frozenset[str]
             = frozenset()) -> list[dict[str, Any]]:
        """Catalog products for ids, in order: unknown, out-of-stock, excluded ones dropped."""
        return _join(self.in_stock, product_ids, limit, exclude)

    def join_json(self, product_ids: list[str], limit: int,
                  exclude: set[str] | frozenset[str] = frozenset()) -> list[orjson.Fragment]:
        """:meth:`join`, as JSON already serialized (orjson copies it into a body as is)."""
        return _join(self.in_stock_json, product_ids, limit, exclude)


P = TypeVar("P")


def _join(in_stock: dict[str, P], product_ids: list[str], limit: int,
          exclude: set[str] | frozenset[str]) -> list[P]:
    out: list[P] = []
    for pid in dict.fromkeys(product_ids):  # each id once, in order
        product = in_stock.get(pid)  # shared objects: callers only serialize them
        if product is None or pid in exclude:
            continue
        out.append(product)
        if len(out) >= limit:
            break
    return out


def load_database(engine: Engine) -> tuple[list[CatalogProduct], frozenset[str]]:
    """Blocking: the catalog and the users who withdrew consent (run in a thread)."""
    products = catalog.load(engine)
    with engine.connect() as conn:
        rows = conn.execute(
            select(Customer.user_id).where(
                or_(Customer.consent.is_(False), Customer.attributes["consent"].astext == "false")
            )
        ).scalars()
        no_consent = frozenset(rows)
    return products, no_consent


@dataclass(frozen=True)
class FallbackContent:
    """Default offers and products served when personalization is unavailable."""

    offers: tuple[dict[str, Any], ...] = ()
    products: tuple[dict[str, Any], ...] = ()
    saved: tuple[dict[str, Any], ...] = ()  # the last top sellers this API saw (see below)

    @classmethod
    def from_file(cls, path: str) -> FallbackContent:
        if not path:
            return cls()
        try:
            data = orjson.loads(Path(path).read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ConfigError(f"DECISIONS_API_FALLBACK_FILE={path}: {exc}") from None
        if not isinstance(data, dict) or not all(
            isinstance(data.get(k, []), list) for k in ("offers", "products")
        ):
            raise ConfigError(
                f"DECISIONS_API_FALLBACK_FILE={path}: expected {{\"offers\": [...], "
                "\"products\": [...]}"
            )
        return cls(tuple(data.get("offers", [])), tuple(data.get("products", [])))

    def fallback_products(self, snapshot: Snapshot, limit: int,
                          exclude: set[str] | frozenset[str] = frozenset()) -> list[dict[str, Any]]:
        """Top sellers in stock, else the catalog in order, else the file's products."""
        found = snapshot.join(snapshot.top_sellers, limit, exclude)
        if len(found) < limit:
            have = {p["id"] for p in found}
            found += snapshot.join(snapshot.order, limit - len(found), exclude | have)
        if not found:
            found = [p for p in (self.products or self.saved)[:limit] if p.get("id") not in exclude]
        return found


SAVED_PRODUCTS = "api-top-sellers.json"
SAVED_COUNT = 50


def load_saved(var_dir: Path) -> tuple[dict[str, Any], ...]:
    """Top sellers saved by an earlier run: what to serve if PostgreSQL is down at start."""
    try:
        data = orjson.loads((var_dir / SAVED_PRODUCTS).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return ()
    return tuple(p for p in data if isinstance(p, dict) and "id" in p) \
        if isinstance(data, list) else ()


def save(var_dir: Path, products: list[dict[str, Any]]) -> None:
    var_dir.mkdir(parents=True, exist_ok=True)
    tmp = var_dir / (SAVED_PRODUCTS + ".tmp")
    tmp.write_bytes(orjson.dumps(products))
    tmp.replace(var_dir / SAVED_PRODUCTS)
