"""``decisions users create`` without a terminal: scripts, containers and CI."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from admin import users
from decisions.cli import main as cli
from rulesets.models import AuditEntry
from tests.helpers import ROOT


def test_no_terminal_and_no_password_stdin_is_one_clear_line(database_url: str,
                                                             clean_db: Engine) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "decisions.cli.main", "users", "create", "bob", "--role",
         "admin"], stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=ROOT,
        env={"DECISIONS_DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"}, timeout=60)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("decisions: cannot create the user: standard input is not "
                                  "a terminal")
    assert "--password-stdin" in done.stderr
    assert not users.exists(clean_db, "bob")


def test_first_admin_from_a_script_is_audited_and_repeatable(
        database_url: str, clean_db: Engine, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DECISIONS_DATABASE_URL", database_url)
    monkeypatch.setenv("USER", "ops")
    argv = ["users", "create", "bob", "--role", "admin", "--password-stdin", "--if-missing"]
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse battery\n"))
    assert cli.main(argv) == 0
    assert capsys.readouterr().out == "created user bob (admin)\n"
    assert users.verify(clean_db, "bob", "correct horse battery") is not None
    # the container starts again: nothing changes, exit 0, stdin not even read
    monkeypatch.setattr("sys.stdin", io.StringIO("another password\n"))
    assert cli.main(argv) == 0
    assert capsys.readouterr().out == "user bob exists; left unchanged\n"
    assert users.verify(clean_db, "bob", "correct horse battery") is not None
    with Session(clean_db) as s:
        rows = s.scalars(select(AuditEntry).where(AuditEntry.action == "user_create")).all()
    assert [(r.actor, r.comment) for r in rows] == [
        ("ops", "user bob created as admin (command line)")]
    # the other user changes from the command line are audited as well
    monkeypatch.setattr("sys.stdin", io.StringIO("a new long password\n"))
    assert cli.main(["users", "password", "bob", "--password-stdin"]) == 0
    assert cli.main(["users", "remove", "bob", "--actor", "ci"]) == 0
    with Session(clean_db) as s:
        later = s.scalars(select(AuditEntry).where(AuditEntry.action.in_(
            ["user_password", "user_remove"])).order_by(AuditEntry.id)).all()
    assert [(r.actor, r.action, r.comment) for r in later] == [
        ("ops", "user_password", "password of user bob changed (command line)"),
        ("ci", "user_remove", "user bob removed (command line)")]


def test_empty_standard_input_says_so(database_url: str, clean_db: Engine,
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DECISIONS_DATABASE_URL", database_url)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert cli.main(["users", "create", "bob", "--role", "admin", "--password-stdin"]) == 2
    assert capsys.readouterr().err == (
        "decisions: cannot create the user: nothing on standard input "
        "(--password-stdin reads its first line)\n")
