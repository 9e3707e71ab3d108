"""Every setting is documented (docs/settings.md), and the README keeps its two commands."""

from __future__ import annotations

import re
from pathlib import Path

from decisions.core.settings import SETTING_NAMES

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_documented() -> None:
    text = (ROOT / "docs" / "settings.md").read_text()
    documented = set(re.findall(r"^\| (DECISIONS_[A-Z0-9_]+) \|", text, re.M))
    assert set(SETTING_NAMES) - documented == set()


def test_readme_gives_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert "make run" in text and "make test" in text
    makefile = (ROOT / "Makefile").read_text()
    assert "decisions up --demo" in makefile
    assert "pytest" in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()
