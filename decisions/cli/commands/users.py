"""``decisions users create|list``: admin UI accounts (argon2 password hashes).

``create`` asks for the password twice at a terminal; scripts, containers and CI pass it
on standard input with ``--password-stdin`` (its first line), and ``--if-missing`` makes
the command safe to run on every start. Each creation is written to the audit log.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from sqlalchemy import Engine

from admin.models import ROLES
from admin.users import MIN_PASSWORD, create_user, exists, list_users
from decisions.cli import invocation
from decisions.core import stackfile
from decisions.core.db import check_database, make_engine
from decisions.core.errors import ValidationError
from decisions.core.settings import Settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("users", help="create and list admin UI users")
    sub = parser.add_subparsers(dest="users_command", metavar="ACTION")
    sub.required = True

    create = sub.add_parser(
        "create", help="create a user (asks for the password, or --password-stdin)")
    create.add_argument("username")
    create.add_argument("--role", required=True, choices=ROLES,
                        help="viewer (reads), editor (+ drafts, backtests), publisher "
                             "(+ publish, roll back), admin (everything)")
    create.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input "
                             "(for scripts, containers, CI)")
    create.add_argument("--if-missing", action="store_true",
                        help="do nothing (exit 0) when a user of that name exists")
    create.add_argument("--actor", default=None,
                        help="who is recorded in the audit log (default: $USER)")
    create.set_defaults(handler=create_handler)

    listing = sub.add_parser("list", help="list users and their roles")
    listing.set_defaults(handler=list_handler)


def _engine(settings: Settings) -> Engine:
    url = stackfile.require(settings, "database_url")
    engine = make_engine(url, pool_size=1)
    check_database(engine, url)
    return engine


def _refused(message: str) -> ValidationError:
    return ValidationError(f"cannot create the user: {message}")


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        if not line.strip():
            raise _refused("nothing on standard input (--password-stdin reads its first line)")
        return line.rstrip("\r\n")
    cmd = invocation.command()
    example = (f"printf '%s\\n' \"$PASSWORD\" | {cmd} users create {args.username} "
               f"--role {args.role} --password-stdin")
    if not sys.stdin.isatty():
        raise _refused(f"standard input is not a terminal, so the password cannot be asked "
                       f"for; pass it on standard input instead: {example}")
    try:
        first = getpass.getpass("Password: ")
        again = getpass.getpass("Password again: ")
    except EOFError:
        raise _refused(f"no password typed; or pass it on standard input: {example}") from None
    if again != first:
        raise _refused("the two passwords differ")
    return first


def create_handler(args: argparse.Namespace, settings: Settings) -> int:
    if args.if_missing:
        engine = _engine(settings)
        try:
            if exists(engine, args.username):
                print(f"user {args.username} exists; left unchanged")
                return 0
        finally:
            engine.dispose()
    password = _password(args)
    if len(password) < MIN_PASSWORD:  # before connecting: the usual mistake, said at once
        raise _refused(f"the password needs at least {MIN_PASSWORD} characters")
    engine = _engine(settings)
    actor = str(args.actor or os.environ.get("USER") or "cli")
    try:
        user = create_user(engine, args.username, password, args.role,
                           actor=actor, via="command line")
    finally:
        engine.dispose()
    print(f"created user {user.username} ({user.role})")
    return 0


def list_handler(args: argparse.Namespace, settings: Settings) -> int:
    engine = _engine(settings)
    try:
        users = list_users(engine)
    finally:
        engine.dispose()
    print(f"{'user':<24}  {'role':<10}  created")
    for user, created in users:
        print(f"{user.username:<24}  {user.role:<10}  {created}")
    return 0
