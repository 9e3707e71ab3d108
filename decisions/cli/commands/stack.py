"""``decisions up``, ``decisions migrate``, ``decisions status``."""

from __future__ import annotations

import argparse
from typing import Any

from decisions.cli import invocation
from decisions.core.settings import Settings


def register(sub: Any) -> None:
    up = sub.add_parser("up", help="run the whole service (embedded services where none set)")
    up.add_argument(
        "--demo", action="store_true", help="load a demo catalog and replay a sample event stream"
    )
    up.add_argument("--host", default=None, help="address to serve on (DECISIONS_API_HOST)")
    up.add_argument(
        "--port",
        type=int,
        default=None,
        help="port to serve on (DECISIONS_API_PORT; 0 = any free port)",
    )
    up.add_argument(
        "--server", choices=("uvicorn", "hypercorn"), default=None,
        help="ASGI server of the API (DECISIONS_API_SERVER; hypercorn speaks HTTP/2: h2c, "
             "and h2 with DECISIONS_API_TLS_CERTFILE/KEYFILE)",
    )
    up.add_argument(
        "--redis-cluster", type=int, default=0, metavar="NODES",
        help="with no DECISIONS_REDIS_URL: start an embedded Redis Cluster of NODES Valkey "
             "primaries (slots split evenly) instead of one Redis (docs/scaling.md)",
    )
    up.set_defaults(handler=cmd_up)

    mig = sub.add_parser("migrate", help="upgrade the database schema (alembic upgrade head)")
    mig.add_argument("--revision", default="head")
    mig.set_defaults(handler=cmd_migrate)

    status = sub.add_parser("status", help="show the running stack from var/stack.json")
    status.set_defaults(handler=cmd_status)


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from dataclasses import replace

    from decisions.cli.up import Up

    if args.server:
        settings = replace(settings, api_server=args.server)
    host = args.host or settings.api_host
    port = settings.api_port if args.port is None else args.port
    if args.redis_cluster < 0 or args.redis_cluster in (1, 2):
        from decisions.core.errors import ConfigError

        raise ConfigError("--redis-cluster needs at least 3 nodes (a cluster of fewer "
                          "cannot elect; 0 = one plain Redis)")
    return Up(settings, with_demo=args.demo, host=host, port=port,
              redis_nodes=args.redis_cluster).run()


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from decisions.cli import migrate
    from decisions.core.db import check_database, make_engine
    from decisions.core.stackfile import require

    url = require(settings, "database_url")
    check_database(make_engine(url, pool_size=1), url)
    migrate.upgrade(url, args.revision)
    print(f"schema at {args.revision}")
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from decisions.core import stackfile

    data = stackfile.running(settings)
    if not data:
        print(
            "decisions is not running here (no live var/stack.json); "
            f"start it with `{invocation.command()} up`"
        )
        return 1
    for key in ("pid", *stackfile.KEYS):
        if key in data:
            print(f"{key}: {data[key]}")
    return 0
