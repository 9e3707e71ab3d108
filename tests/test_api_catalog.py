"""``decisions catalog import``: CSV and JSON Lines, validation by line, upsert."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from decisions.cli.demo_replay import DEMO_CATALOG
from decisions.cli.main import main
from decisions.core.errors import ValidationError
from decisions.core.models import Product
from decisions.core.settings import Settings
from decisions.runtime import catalog


def test_demo_catalog(clean_db: Engine) -> None:
    assert catalog.import_file(clean_db, DEMO_CATALOG) == 40
    products = catalog.load(clean_db)
    assert [p.product_id for p in products[:3]] == ["p-1", "p-2", "p-3"]
    assert products[9].product_id == "p-10"  # natural order
    assert {p.category for p in products} == {"shoes", "bags", "jackets", "watches",
                                              "accessories"}
    assert sum(not p.in_stock for p in products) == 3


def test_jsonl_upserts(clean_db: Engine, tmp_path: Path) -> None:
    path = tmp_path / "cat.jsonl"
    path.write_text('{"product_id": "a", "name": "A", "price": 1.5}\n\n'
                    '{"product_id": "b", "name": "B", "price": 2, "in_stock": false,'
                    ' "category": "bags"}\n')
    assert catalog.import_file(clean_db, path) == 2
    path.write_text('{"product_id": "a", "name": "A2", "price": 3}\n')
    catalog.import_file(clean_db, path)
    with clean_db.connect() as conn:
        rows = conn.execute(select(Product.product_id, Product.name, Product.price,
                                   Product.in_stock).order_by(Product.product_id)).all()
    assert [tuple(r) for r in rows] == [("a", "A2", 3.0, True), ("b", "B", 2.0, False)]


def test_bad_rows_are_named_by_line_and_nothing_is_written(
    clean_db: Engine, tmp_path: Path
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("product_id,name,price,in_stock\n"
                    "p-1,Good,10,true\n"
                    "p-2,,abc,maybe\n"
                    "p-1,Dup,5,true\n")
    with pytest.raises(ValidationError) as caught:
        catalog.import_file(clean_db, path)
    found = {(d.line, d.field) for d in caught.value.details}
    assert found == {(3, "name"), (3, "price"), (3, "in_stock"), (4, "product_id")}
    assert catalog.load(clean_db) == []
    header = tmp_path / "header.csv"
    header.write_text("id,name\n1,x\n")
    with pytest.raises(ValidationError, match="invalid catalog") as missing:
        catalog.read_file(header)
    assert {d.field for d in missing.value.details} == {"product_id", "price"}
    with pytest.raises(ValidationError, match="expected a .csv or .jsonl"):
        catalog.read_file(tmp_path / "x.xml")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"product_id": "a"\n')
    with pytest.raises(ValidationError) as bad_json:
        catalog.read_file(broken)
    assert bad_json.value.details[0].line == 1


def test_cli_import(settings: Settings, clean_db: Engine, tmp_path: Path,
                    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DECISIONS_DATABASE_URL", str(settings.database_url))
    monkeypatch.setenv("DECISIONS_VAR_DIR", str(settings.var_dir))
    assert main(["catalog", "import", str(DEMO_CATALOG)]) == 0
    assert "imported 40 products" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    bad.write_text("product_id,name,price\np-1,X,-1\n")
    assert main(["catalog", "import", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "line 2: price" in err
