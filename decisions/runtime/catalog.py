"""The product catalog: imported from CSV or JSON Lines into ``products``, read by the API.

Columns / fields: ``product_id, name, price, image_url, category, in_stock``
(``product_id``, ``name`` and ``price`` required). An import validates the whole file
first and names the line of each bad row; nothing is written unless every row is good.
Rows are upserted by ``product_id``.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, select
from sqlalchemy.dialects.postgresql import insert

from decisions.core.db import utcnow
from decisions.core.errors import FieldError, ValidationError
from decisions.core.models import Product

FIELDS = ("product_id", "name", "price", "image_url", "category", "in_stock")
REQUIRED = ("product_id", "name", "price")
TRUE = {"1", "true", "yes", "y", "t"}
FALSE = {"0", "false", "no", "n", "f", ""}


@dataclass(frozen=True)
class CatalogProduct:
    product_id: str
    name: str
    price: float
    image_url: str | None
    category: str | None
    in_stock: bool = True

    def to_api(self) -> dict[str, Any]:
        """The product object the storefront API returns."""
        return {
            "id": self.product_id,
            "name": self.name,
            "price": self.price,
            "image_url": self.image_url,
            "category": self.category,
        }


def _bool(value: Any, line: int, errors: list[FieldError]) -> bool:
    if isinstance(value, bool):
        return value
    if value is None:
        return True
    text = str(value).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    errors.append(FieldError("in_stock", f"expected true or false, got {value!r}", line))
    return True


def parse_row(row: dict[str, Any], line: int) -> tuple[CatalogProduct | None, list[FieldError]]:
    errors: list[FieldError] = []
    for key in row:
        if key not in FIELDS:
            errors.append(FieldError(str(key), "unknown column", line))
    for key in REQUIRED:
        if row.get(key) in (None, ""):
            errors.append(FieldError(key, "required", line))
    price: float = 0.0
    raw_price = row.get("price")
    if raw_price not in (None, ""):
        try:
            if isinstance(raw_price, bool):
                raise ValueError
            price = float(raw_price)
            if price < 0 or price != price:
                errors.append(FieldError("price", "must be a non-negative number", line))
        except (TypeError, ValueError):
            errors.append(FieldError("price", f"expected a number, got {raw_price!r}", line))
    for key in ("product_id", "name", "image_url", "category"):
        value = row.get(key)
        if value is not None and not isinstance(value, str):
            errors.append(FieldError(key, "expected a string", line))
    pid = row.get("product_id")
    if isinstance(pid, str) and len(pid) > 200:
        errors.append(FieldError("product_id", "longer than 200 characters", line))
    in_stock = _bool(row.get("in_stock"), line, errors)
    if errors:
        return None, errors
    return CatalogProduct(
        product_id=str(row["product_id"]).strip(),
        name=str(row["name"]).strip(),
        price=price,
        image_url=(row.get("image_url") or None),
        category=(row.get("category") or None),
        in_stock=in_stock,
    ), []


def read_file(path: Path) -> list[CatalogProduct]:
    """Parse a ``.csv`` or ``.jsonl`` catalog; ValidationError names file and line."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson", ".json"):
        raise ValidationError(f"{path}: expected a .csv or .jsonl file")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValidationError(f"{path}: cannot read ({exc.strerror})") from None
    rows: list[tuple[int, Any]] = []
    if suffix != ".csv":
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append((number, orjson.loads(line)))
            except orjson.JSONDecodeError as exc:
                raise ValidationError(
                    f"{path}: invalid catalog",
                    [FieldError("", f"invalid JSON ({exc})", number)],
                ) from None
    else:
        reader = csv.DictReader(io.StringIO(text))
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise ValidationError(
                f"{path}: invalid catalog",
                [FieldError(c, "missing column in the header", 1) for c in missing],
            )
        for row in reader:
            rows.append((reader.line_num, {k: v for k, v in row.items() if k is not None}))
    products: list[CatalogProduct] = []
    errors: list[FieldError] = []
    seen: set[str] = set()
    for number, row in rows:
        if not isinstance(row, dict):
            errors.append(FieldError("", "expected a JSON object", number))
            continue
        product, row_errors = parse_row(row, number)
        errors.extend(row_errors)
        if product is not None:
            if product.product_id in seen:
                errors.append(FieldError("product_id", f"duplicate {product.product_id!r}", number))
            seen.add(product.product_id)
            products.append(product)
    if errors:
        raise ValidationError(f"{path}: invalid catalog", errors)
    return products


def upsert(engine: Engine, products: list[CatalogProduct]) -> int:
    if not products:
        return 0
    now = utcnow()
    rows = [
        {"product_id": p.product_id, "name": p.name, "price": p.price, "image_url": p.image_url,
         "category": p.category, "in_stock": p.in_stock, "updated_at": now}
        for p in products
    ]
    with engine.begin() as conn:
        for start in range(0, len(rows), 1000):
            stmt = insert(Product).values(rows[start : start + 1000])
            stmt = stmt.on_conflict_do_update(
                index_elements=[Product.product_id],
                set_={k: stmt.excluded[k] for k in ("name", "price", "image_url", "category",
                                                    "in_stock", "updated_at")},
            )
            conn.execute(stmt)
    return len(rows)


def import_file(engine: Engine, path: Path) -> int:
    return upsert(engine, read_file(path))


def load(engine: Engine) -> list[CatalogProduct]:
    """Every product, in catalog order (product id order: p-2 before p-10)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Product.product_id, Product.name, Product.price, Product.image_url,
                   Product.category, Product.in_stock)
        ).all()
    products = [CatalogProduct(r.product_id, r.name, r.price, r.image_url, r.category,
                               r.in_stock) for r in rows]
    products.sort(key=lambda p: _natural(p.product_id))
    return products


def _natural(value: str) -> tuple[Any, ...]:
    return tuple(int(part) if part.isdigit() else part
                 for part in re.split(r"(\d+)", value))
