"""``decisions customers import FILE``: customer attributes from a CRM export (CSV or JSON
Lines), upserted by ``user_id`` (``decisions.runtime.customer_records``).

Every line is checked on its own: a bad line is printed with the file, its number, the
field and why, and skipped; the good lines are written. Exit 0 when every line was good,
1 when some were skipped (their customers are unchanged), 2 when the file cannot be read.
The worker sees the new attributes within its reload interval (it drops the cached entries
of customers whose row changed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from decisions.core import stackfile
from decisions.core.db import check_database, make_engine
from decisions.core.errors import ValidationError
from decisions.core.settings import Settings
from decisions.runtime import customer_records

MAX_SHOWN = 50


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("customers", help="load customer attributes (CRM data)")
    sub = parser.add_subparsers(dest="customers_command", metavar="ACTION")
    sub.required = True
    imp = sub.add_parser(
        "import", help="import customers from a .csv or .jsonl file (upsert by user_id)",
        description="Columns / fields: user_id (or id), tier, country, signup_date "
                    "(YYYY-MM-DD), segments (comma-separated in CSV) and any custom attribute "
                    "(lifetime_value, plan, ...), read by rules as customer.<name>. A record "
                    "replaces the customer's attributes; consent is kept. Bad lines are "
                    "reported with their number and skipped; good lines are written.",
    )
    imp.add_argument("file", type=Path, help="the .csv or .jsonl file")
    imp.set_defaults(handler=import_handler)


def read(path: Path) -> customer_records.FileReport:
    suffix = path.suffix.lower()
    if suffix not in customer_records.SUFFIXES:
        raise ValidationError(f"{path}: expected a .csv or .jsonl file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValidationError(f"{path}: cannot read ({exc.strerror})") from None
    return customer_records.parse_bytes(data, suffix)


def import_handler(args: argparse.Namespace, settings: Settings) -> int:
    report = read(args.file)  # checked before connecting
    url = stackfile.require(settings, "database_url")
    engine = make_engine(url, pool_size=1)
    try:
        check_database(engine, url)
        created, updated = customer_records.upsert(engine, report.records)
    finally:
        engine.dispose()
    for error in report.errors[:MAX_SHOWN]:
        field = f" {error.field}:" if error.field else ""
        print(f"{args.file}:{error.line}:{field} {error.message}", file=sys.stderr)
    if len(report.errors) > MAX_SHOWN:
        print(f"{args.file}: ... and {len(report.errors) - MAX_SHOWN} more errors",
              file=sys.stderr)
    bad_lines = len({e.line for e in report.errors})
    summary = (f"imported {created + updated} customers from {args.file} "
               f"({created} new, {updated} updated)")
    if report.repeated:
        summary += f"; {report.repeated} lines repeated an earlier user_id (the last one kept)"
    if bad_lines:
        summary += f"; {bad_lines} bad lines skipped"
    print(summary)
    return 1 if bad_lines else 0
