"""The hints we print name the command as it can be typed in the user's shell."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from decisions.cli import invocation


def test_command_is_bare_only_when_path_finds_this_installation(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bindir = Path(sys.executable).parent
    if not (bindir / "decisions").exists():
        pytest.skip("the decisions script is not installed beside this interpreter")
    monkeypatch.setattr(sys, "argv", [str(bindir / "decisions")])
    monkeypatch.chdir(bindir.parent.parent)  # the project folder holding .venv
    assert invocation.command(path_lookup=str(bindir)) == "decisions"
    assert invocation.path_hint(path_lookup=str(bindir)) == ""
    # not on PATH (a fresh shell after `make run`): the typeable path and how to activate
    relative = str((bindir / "decisions").relative_to(bindir.parent.parent))
    assert invocation.command(path_lookup="/usr/bin:/bin") == relative
    hint = invocation.path_hint(path_lookup="/usr/bin:/bin")
    assert relative in hint and f"source {Path(relative).parent / 'activate'}" in hint
    # another `decisions` first on PATH is not this one either
    other = tmp_path / "decisions"
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    assert invocation.command(path_lookup=f"{tmp_path}:{bindir}") == relative
