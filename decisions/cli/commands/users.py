"""``decisions users create|list|password|remove``: admin UI accounts (argon2 password
hashes). A new password and a removal end the user's admin sessions everywhere.

``create`` and ``password`` ask for the password twice at a terminal; scripts, containers
and CI pass it on standard input with ``--password-stdin`` (its first line), and
``create --if-missing`` is safe to run on every start. Each change is written to the
audit log, as the Users page does.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from sqlalchemy import Engine

from admin.models import ROLES
from admin.users import (
    MIN_PASSWORD,
    create_user,
    exists,
    list_users,
    record,
    remove_user,
    set_password,
)
from decisions.cli import invocation
from decisions.core import stackfile
from decisions.core.db import check_database, make_engine
from decisions.core.errors import ValidationError
from decisions.core.settings import Settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("users", help="create, list and manage admin UI users")
    sub = parser.add_subparsers(dest="users_command", metavar="ACTION")
    sub.required = True
    actor = argparse.ArgumentParser(add_help=False)
    actor.add_argument("--actor", default=None,
                       help="who is recorded in the audit log (default: $USER)")

    create = sub.add_parser(
        "create", parents=[actor],
        help="create a user (asks for the password, or --password-stdin)")
    create.add_argument("username")
    create.add_argument("--role", required=True, choices=ROLES,
                        help="viewer (reads), editor (+ drafts, backtests), publisher "
                             "(+ publish, roll back), admin (everything)")
    create.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input "
                             "(for scripts, containers, CI)")
    create.add_argument("--if-missing", action="store_true",
                        help="do nothing (exit 0) when a user of that name exists")
    create.set_defaults(handler=create_handler)

    listing = sub.add_parser("list", help="list users and their roles")
    listing.set_defaults(handler=list_handler)

    password = sub.add_parser("password", parents=[actor],
                              help="set a user's password (asks for it); "
                                   "ends the user's sessions")
    password.add_argument("username")
    password.add_argument("--password-stdin", action="store_true",
                          help="read the password from the first line of standard input")
    password.set_defaults(handler=password_handler)

    remove = sub.add_parser("remove", parents=[actor],
                            help="remove a user; ends the user's sessions")
    remove.add_argument("username")
    remove.set_defaults(handler=remove_handler)


def _engine(settings: Settings) -> Engine:
    url = stackfile.require(settings, "database_url")
    engine = make_engine(url, pool_size=1)
    check_database(engine, url)
    return engine


def _actor(args: argparse.Namespace) -> str:
    return str(args.actor or os.environ.get("USER") or "cli")


def _password(args: argparse.Namespace, what: str, example: str) -> str:
    """The password from standard input (``--password-stdin``) or typed twice at a
    terminal; without either, one line saying how (never an EOFError traceback)."""
    def refused(message: str) -> ValidationError:
        return ValidationError(f"cannot {what}: {message}")

    if args.password_stdin:
        line = sys.stdin.readline()
        if not line.strip():
            raise refused("nothing on standard input (--password-stdin reads its first line)")
        password = line.rstrip("\r\n")
    else:
        example = f"printf '%s\\n' \"$PASSWORD\" | {invocation.command()} {example} " \
                  "--password-stdin"
        if not sys.stdin.isatty():
            raise refused("standard input is not a terminal, so the password cannot be asked "
                          f"for; pass it on standard input instead: {example}")
        try:
            password = getpass.getpass("Password: ")
            again = getpass.getpass("Password again: ")
        except EOFError:
            raise refused(f"no password typed; or pass it on standard input: {example}") from None
        if again != password:
            raise refused("the two passwords differ")
    if len(password) < MIN_PASSWORD:  # before connecting: the usual mistake, said at once
        raise refused(f"the password needs at least {MIN_PASSWORD} characters")
    return password


def create_handler(args: argparse.Namespace, settings: Settings) -> int:
    if args.if_missing:
        engine = _engine(settings)
        try:
            if exists(engine, args.username):
                print(f"user {args.username} exists; left unchanged")
                return 0
        finally:
            engine.dispose()
    password = _password(args, "create the user",
                         f"users create {args.username} --role {args.role}")
    engine = _engine(settings)
    try:
        user = create_user(engine, args.username, password, args.role,
                           actor=_actor(args), via="command line")
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


def password_handler(args: argparse.Namespace, settings: Settings) -> int:
    password = _password(args, "set the password", f"users password {args.username}")
    engine = _engine(settings)
    try:
        user = set_password(engine, args.username, password)
        record(engine, _actor(args), "user_password",
               f"password of user {user.username} changed (command line)")
    finally:
        engine.dispose()
    print(f"password of {user.username} changed; their admin sessions ended")
    return 0


def remove_handler(args: argparse.Namespace, settings: Settings) -> int:
    engine = _engine(settings)
    try:
        user = remove_user(engine, args.username)
        record(engine, _actor(args), "user_remove",
               f"user {user.username} removed (command line)")
    finally:
        engine.dispose()
    print(f"removed user {user.username} ({user.role}); their admin sessions ended")
    return 0
