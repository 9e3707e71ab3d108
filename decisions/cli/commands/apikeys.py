"""``decisions apikeys create|list|revoke``: storefront API keys (stored hashed)."""

from __future__ import annotations

import argparse
import json

from sqlalchemy import Engine

from decisions.core import stackfile
from decisions.core.db import check_database, make_engine
from decisions.core.settings import Settings
from decisions.runtime import apikeys


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("apikeys", help="create, list and revoke storefront API keys")
    sub = parser.add_subparsers(dest="apikeys_command", metavar="ACTION")
    sub.required = True

    create = sub.add_parser("create", help="create a key; prints it once")
    create.add_argument("name", help="who uses the key, e.g. the storefront's name")
    create.add_argument(
        "--scope", action="append", dest="scopes", choices=apikeys.SCOPES,
        help="offers:read, events:write or admin; repeat for several "
             f"(default: {' and '.join(apikeys.DEFAULT_SCOPES)})",
    )
    create.add_argument("--json", action="store_true", help="print JSON")
    create.set_defaults(handler=create_handler)

    listing = sub.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--active", action="store_true", help="hide revoked keys")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=list_handler)

    revoke = sub.add_parser("revoke", help="revoke a key by its prefix or id")
    revoke.add_argument("key", help="the key's prefix (as listed), the whole key, or its id")
    revoke.set_defaults(handler=revoke_handler)


def _engine(settings: Settings) -> Engine:
    url = stackfile.require(settings, "database_url")
    engine = make_engine(url, pool_size=1)
    check_database(engine, url)
    return engine


def create_handler(args: argparse.Namespace, settings: Settings) -> int:
    engine = _engine(settings)
    try:
        key, info = apikeys.create_key(engine, args.name, args.scopes or apikeys.DEFAULT_SCOPES)
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps({"key": key, **info.to_dict()}))
    else:
        print(key)
        print(f"(key {info.prefix} for {info.name!r}, scopes {', '.join(info.scopes)}; "
              "shown once, store it now)")
    return 0


def list_handler(args: argparse.Namespace, settings: Settings) -> int:
    engine = _engine(settings)
    try:
        keys = apikeys.list_keys(engine, include_revoked=not args.active)
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps([k.to_dict() for k in keys]))
        return 0
    print(f"{'id':>4}  {'prefix':<8}  {'scopes':<32}  {'status':<8}  name")
    for k in keys:
        status = "revoked" if k.revoked_at else "active"
        print(f"{k.id:>4}  {k.prefix:<8}  {','.join(k.scopes):<32}  {status:<8}  {k.name}")
    return 0


def revoke_handler(args: argparse.Namespace, settings: Settings) -> int:
    engine = _engine(settings)
    try:
        info = apikeys.revoke_key(engine, args.key)
    finally:
        engine.dispose()
    print(f"revoked key {info.prefix} ({info.name}); API processes stop accepting it within "
          f"{settings.apikey_cache_seconds:g} s")
    return 0
