"""``decisions users create|list|password|remove``: admin UI accounts (argon2 password
hashes). A new password and a removal end the user's admin sessions everywhere."""

from __future__ import annotations

import argparse
import getpass
import sys

from sqlalchemy import Engine

from admin.models import ROLES
from admin.users import create_user, list_users, remove_user, set_password
from decisions.core import stackfile
from decisions.core.db import check_database, make_engine
from decisions.core.errors import FieldError, ValidationError
from decisions.core.settings import Settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("users", help="create, list and manage admin UI users")
    sub = parser.add_subparsers(dest="users_command", metavar="ACTION")
    sub.required = True

    create = sub.add_parser("create", help="create a user (asks for the password)")
    create.add_argument("username")
    create.add_argument("--role", required=True, choices=ROLES,
                        help="viewer (reads), editor (+ drafts, backtests), publisher "
                             "(+ publish, roll back), admin (everything)")
    create.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input")
    create.set_defaults(handler=create_handler)

    listing = sub.add_parser("list", help="list users and their roles")
    listing.set_defaults(handler=list_handler)

    password = sub.add_parser("password", help="set a user's password (asks for it); "
                                               "ends the user's sessions")
    password.add_argument("username")
    password.add_argument("--password-stdin", action="store_true",
                          help="read the password from the first line of standard input")
    password.set_defaults(handler=password_handler)

    remove = sub.add_parser("remove", help="remove a user; ends the user's sessions")
    remove.add_argument("username")
    remove.set_defaults(handler=remove_handler)


def _engine(settings: Settings) -> Engine:
    url = stackfile.require(settings, "database_url")
    engine = make_engine(url, pool_size=1)
    check_database(engine, url)
    return engine


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password again: ") != first:
        raise ValidationError("the passwords differ",
                              [FieldError("password", "the two passwords differ")])
    return first


def create_handler(args: argparse.Namespace, settings: Settings) -> int:
    password = _password(args)
    engine = _engine(settings)
    try:
        user = create_user(engine, args.username, password, args.role)
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
    password = _password(args)
    engine = _engine(settings)
    try:
        user = set_password(engine, args.username, password)
    finally:
        engine.dispose()
    print(f"password of {user.username} changed; their admin sessions ended")
    return 0


def remove_handler(args: argparse.Namespace, settings: Settings) -> int:
    engine = _engine(settings)
    try:
        user = remove_user(engine, args.username)
    finally:
        engine.dispose()
    print(f"removed user {user.username} ({user.role}); their admin sessions ended")
    return 0
