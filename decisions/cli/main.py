"""The ``decisions`` command. Subcommands live in ``decisions.cli.commands.*``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from psycopg.errors import UndefinedTable
from sqlalchemy.exc import DBAPIError

from decisions.cli import invocation
from decisions.cli.commands import MODULES
from decisions.core.errors import DecisionsError
from decisions.core.settings import Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="decisions",
        description="Real-time personalization decisions: events in, offers out.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        for noisy in ("kafka", "alembic", "uvicorn.error"):
            logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
        code = args.handler(args, settings)
    except DecisionsError as exc:
        print(f"decisions: {exc}", file=sys.stderr)
        return 2 if exc.code in ("validation_error", "config_error") else 1
    except DBAPIError as exc:
        if not isinstance(exc.orig, UndefinedTable):
            raise
        print(f"decisions: the database has no decisions schema yet "
              f"({str(exc.orig).splitlines()[0]}); run `{invocation.command()} migrate` "
              "first", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
