"""``decisions rulesets …``: validate, import, export, publish, roll back, diff, list, history.

``validate`` needs no database. Every other action talks to the ruleset store in
PostgreSQL (``DECISIONS_DATABASE_URL`` or a running ``decisions up``). The actor recorded
in the audit log is ``--actor`` or ``$USER``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from decisions.cli import invocation
from decisions.core import stackfile
from decisions.core.db import check_database, make_engine
from decisions.core.errors import DecisionsError, FieldError, ValidationError
from decisions.core.settings import Settings
from rulesets import export
from rulesets.diff import diff_documents, render
from rulesets.document import read_file
from rulesets.store import RulesetStore
from rulesets.validate import validate

SUFFIXES = (".yaml", ".yml", ".json")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "rulesets", help="validate, import, export, publish, roll back and diff rulesets",
        description="Rulesets are JSON or YAML files (docs/rules.md). Versions live in "
                    "PostgreSQL: drafts, immutable published versions, an audit log.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--actor", default=None,
                        help="who is acting, for the audit log (default: $USER)")
    sub = parser.add_subparsers(dest="rulesets_command", metavar="ACTION")
    sub.required = True

    p = sub.add_parser("validate", help="check files; print file:line: path: message per error")
    p.add_argument("path", type=Path, help="a .yaml/.yml/.json file or a directory of them")
    p.set_defaults(handler=validate_handler)

    p = sub.add_parser("import", parents=[common],
                       help="import files as new versions (all checked first)")
    p.add_argument("path", type=Path, help="a file or a directory of ruleset files")
    p.add_argument("--draft", action="store_true", help="save as drafts, do not publish")
    p.add_argument("--comment", default="", help="the version comment")
    p.set_defaults(handler=import_handler)

    p = sub.add_parser("export", parents=[common], help="print a version (default: the active one)")
    p.add_argument("name")
    p.add_argument("--version", default=None, help='a version number or "draft"')
    p.add_argument("--format", choices=("yaml", "json"), default="yaml")
    p.add_argument("--output", "-o", type=Path, default=None, help="write to a file")
    p.set_defaults(handler=export_handler)

    p = sub.add_parser("publish", parents=[common], help="publish the draft as a new version")
    p.add_argument("name")
    p.add_argument("--comment", required=True, help="why: recorded with the version")
    p.add_argument("--approved-by", default=None,
                   help="the second person approving (rulesets with four_eyes: true)")
    p.set_defaults(handler=publish_handler)

    p = sub.add_parser("rollback", parents=[common],
                       help="publish an earlier version again, as a new version")
    p.add_argument("name")
    p.add_argument("--to", type=int, required=True, dest="to_version", metavar="N")
    p.add_argument("--comment", default="")
    p.set_defaults(handler=rollback_handler)

    p = sub.add_parser("diff", parents=[common], help="what changed from version A to version B")
    p.add_argument("name")
    p.add_argument("a", help='a version number or "draft"')
    p.add_argument("b", help='a version number or "draft"')
    p.add_argument("--json", action="store_true", help="print the structured diff as JSON")
    p.set_defaults(handler=diff_handler)

    p = sub.add_parser("list", parents=[common], help="rulesets with their active version")
    p.set_defaults(handler=list_handler)

    p = sub.add_parser("history", parents=[common],
                       help="versions of a ruleset (and, with --audit, every change)")
    p.add_argument("name")
    p.add_argument("--audit", action="store_true", help="show the audit log instead")
    p.set_defaults(handler=history_handler)


def _actor(args: argparse.Namespace) -> str:
    return str(args.actor or os.environ.get("USER") or "cli")


def _store(settings: Settings) -> RulesetStore:
    url = stackfile.require(settings, "database_url")
    engine = make_engine(url, pool_size=1)
    check_database(engine, url)
    return RulesetStore(engine)


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file())
        if not files:
            raise ValidationError(f"{path}: no .yaml, .yml or .json files")
        return files
    if not path.exists():
        raise ValidationError(f"{path}: no such file or directory")
    return [path]


def _check(path: Path) -> tuple[list[tuple[Path, dict[str, Any]]], list[str]]:
    """Read and validate every file; return the good documents and the error lines."""
    good, problems = [], []
    for file in _files(path):
        try:
            data, lines = read_file(file)
            good.append((file, validate(data, lines)))
        except ValidationError as exc:
            problems.extend(_lines(file, exc))
    return good, problems


def _lines(file: Path, exc: ValidationError) -> list[str]:
    if not exc.details:
        return [exc.message if exc.message.startswith(str(file)) else f"{file}: {exc.message}"]
    return [_line(file, d) for d in exc.details]


def _line(file: Path, d: FieldError) -> str:
    where = f"{file}:{d.line}" if d.line else str(file)
    return f"{where}: {d.field}: {d.message}" if d.field else f"{where}: {d.message}"


def validate_handler(args: argparse.Namespace, settings: Settings) -> int:
    good, problems = _check(args.path)
    for line in problems:
        print(line, file=sys.stderr)
    for file, doc in good:
        print(f"{file}: ok ({doc['name']}, {len(doc['rules'])} rules)")
    if problems:
        print(f"{len(problems)} error(s)", file=sys.stderr)
        return 2
    return 0


def import_handler(args: argparse.Namespace, settings: Settings) -> int:
    good, problems = _check(args.path)
    if problems:  # never half-applied: nothing is imported while one file is bad
        for line in problems:
            print(line, file=sys.stderr)
        print(f"{len(problems)} error(s); nothing imported", file=sys.stderr)
        return 2
    names = [doc["name"] for _, doc in good]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValidationError(f"ruleset {', '.join(twice)} defined in more than one file; "
                              "nothing imported")
    store = _store(settings)
    actor = _actor(args)
    try:
        for file, doc in good:
            _import_one(store, file, doc, actor, args)
    finally:
        store.engine.dispose()
    return 0


def _import_one(store: RulesetStore, file: Path, doc: dict[str, Any], actor: str,
                args: argparse.Namespace) -> None:
    name = doc["name"]
    current = None
    if name in store.names():
        draft = store.draft(name)
        try:
            current = store.get_version(name).document
        except DecisionsError:
            current = None
        if draft is None and current == doc:
            print(f"{file}: {name} unchanged (active version already has this content)")
            return
    store.save_draft(doc, actor)
    if args.draft:
        print(f"{file}: {name} saved as a draft")
        return
    if doc["four_eyes"]:
        print(f"{file}: {name} saved as a draft; it needs a second person's approval: "
              f"{invocation.command()} rulesets publish {name} --comment ... --approved-by WHO")
        return
    version = store.publish(name, actor, args.comment or f"imported from {file.name}")
    print(f"{file}: {name} published as version {version}")


def export_handler(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    try:
        doc = store.document(args.name, args.version)
    finally:
        store.engine.dispose()
    text = export.to_json(doc) if args.format == "json" else export.to_yaml(doc)
    if args.output is not None:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def publish_handler(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    try:
        version = store.publish(args.name, _actor(args), args.comment,
                                approved_by=args.approved_by)
    finally:
        store.engine.dispose()
    print(f"{args.name}: published version {version}")
    return 0


def rollback_handler(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    try:
        version = store.rollback(args.name, args.to_version, _actor(args), args.comment)
    finally:
        store.engine.dispose()
    print(f"{args.name}: version {args.to_version} published again as version {version}")
    return 0


def diff_handler(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    try:
        diff = diff_documents(store.document(args.name, args.a), store.document(args.name, args.b))
    finally:
        store.engine.dispose()
    print(json.dumps(diff, indent=2, ensure_ascii=False) if args.json else render(diff))
    return 0


def list_handler(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    try:
        active = {a.name: a for a in store.active_documents()}
        names = store.names()
        rows = []
        for name in names:
            version = active[name].version if name in active else None
            rules = len(active[name].document["rules"]) if name in active else 0
            draft = store.draft(name)
            rows.append((name, "-" if version is None else str(version), str(rules),
                         f"revision {draft.revision} by {draft.updated_by}" if draft else ""))
    finally:
        store.engine.dispose()
    if not rows:
        print(f"no rulesets (import some: {invocation.command()} rulesets import rulesets/starter)")
        return 0
    _table(("NAME", "ACTIVE", "RULES", "DRAFT"), rows)
    return 0


def history_handler(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    try:
        if args.audit:
            entries = store.audit(args.name)
            rows = [(f"{e.at:%Y-%m-%d %H:%M:%S}", e.actor, e.action,
                     "" if e.version is None else str(e.version), e.comment) for e in entries]
            _table(("AT (UTC)", "WHO", "ACTION", "VERSION", "COMMENT"), rows)
            return 0
        versions = store.versions(args.name)
        rows = [(str(v.version), f"{v.created_at:%Y-%m-%d %H:%M:%S}", v.author,
                 v.approved_by or "", v.comment) for v in versions]
    finally:
        store.engine.dispose()
    _table(("VERSION", "AT (UTC)", "AUTHOR", "APPROVED BY", "COMMENT"), rows)
    return 0


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    for row in (header, *rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
