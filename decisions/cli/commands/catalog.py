"""``decisions catalog import FILE``: load products from CSV or JSON Lines (upsert)."""

from __future__ import annotations

import argparse
from pathlib import Path

from decisions.cli.demo_replay import DEMO_CATALOG
from decisions.core import stackfile
from decisions.core.db import check_database, make_engine
from decisions.core.settings import Settings
from decisions.runtime import catalog


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("catalog", help="manage the product catalog")
    sub = parser.add_subparsers(dest="catalog_command", metavar="ACTION")
    sub.required = True
    imp = sub.add_parser(
        "import", help="import products from a .csv or .jsonl file (upsert by product_id)",
        description="Columns: product_id, name, price, image_url, category, in_stock. "
                    "The whole file is checked first; nothing is written if a row is bad.",
    )
    imp.add_argument("file", type=Path, nargs="?", default=DEMO_CATALOG,
                     help="the file (default: the demo catalog of 40 products)")
    imp.set_defaults(handler=import_handler)


def import_handler(args: argparse.Namespace, settings: Settings) -> int:
    products = catalog.read_file(args.file)  # validate before touching the database
    url = stackfile.require(settings, "database_url")
    engine = make_engine(url, pool_size=1)
    try:
        check_database(engine, url)
        count = catalog.upsert(engine, products)
    finally:
        engine.dispose()
    print(f"imported {count} products from {args.file}")
    return 0
