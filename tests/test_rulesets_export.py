"""``rulesets export`` gives back the file a ruleset came from (issue #22, item 7)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from sqlalchemy import Engine

from decisions.cli.main import main
from rulesets.export import to_yaml
from rulesets.store import RulesetStore
from rulesets.validate import validate
from tests.helpers import ROOT

STARTERS = sorted((ROOT / "rulesets" / "starter").glob("*.yaml"))

EDITED = """\
name: campaigns
description: 'Quotes, colons: and # signs stay text'
stacking: true
four_eyes: true
rules:
  - name: summer
    description: >-
      A long description that is folded over two lines because it is longer than a
      hundred characters in all.
    priority: 20
    enabled: false
    active: {from: '2026-06-01T00:00:00+00:00', until: '2026-09-01T00:00:00+00:00'}
    when:
      any:
        - {field: event.type, op: eq, value: add_to_cart}
        - not:
            all:
              - {field: state.cart_value, op: lt, value: 50}
              - {field: event.type, op: in, value: [page_view, search]}
    then:
      - discount: {amount: 5, code: SUMMER5, min_basket: 40, products: [p-1, p-2]}
      - add_segment: {segment: summer}
"""


def meaningful(text: str) -> list[str]:
    """Lines of a ruleset file without comments and blank lines (`diff -B`, comments aside)."""
    lines = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        lines.append(re.sub(r"\s+#\s.*$", "", line))
    return lines


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str,
            clean_db: Engine) -> RulesetStore:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DECISIONS_DATABASE_URL", database_url)
    monkeypatch.setenv("USER", "tester")
    return RulesetStore(clean_db)


@pytest.mark.parametrize("source", STARTERS, ids=lambda p: p.name)
def test_export_of_an_imported_file_diffs_clean_against_it(
        source: Path, cli_env: RulesetStore, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rulesets", "import", str(source)]) == 0
    name = yaml.safe_load(source.read_text())["name"]
    out = tmp_path / "exported.yaml"
    assert main(["rulesets", "export", name, "-o", str(out)]) == 0
    assert meaningful(out.read_text()) == meaningful(source.read_text())
    # and importing the export changes nothing
    capsys.readouterr()
    assert main(["rulesets", "import", str(out)]) == 0
    assert "unchanged" in capsys.readouterr().out


def test_every_setting_survives_and_stays_as_written(tmp_path: Path) -> None:
    doc = validate(yaml.safe_load(EDITED))
    stored = yaml.safe_load(yaml.safe_dump(dict(sorted(doc.items()))))  # order lost, as JSONB
    text = to_yaml(stored)
    assert validate(yaml.safe_load(text)) == doc
    assert meaningful(text) == meaningful(EDITED)


def test_defaults_are_left_out() -> None:
    doc = validate({"name": "tiny", "rules": [{"name": "r", "when": {
        "field": "event.type", "op": "eq", "value": "search"}, "then": [
        {"add_segment": {"segment": "searchers"}}]}]})
    assert doc["rules"][0]["enabled"] is True and doc["rules"][0]["active"] == {}
    assert to_yaml(doc) == (
        "name: tiny\n"
        "stacking: false\n"
        "rules:\n"
        "  - name: r\n"
        "    priority: 0\n"
        "    when: {field: event.type, op: eq, value: search}\n"
        "    then:\n"
        "      - add_segment: {segment: searchers}\n"
    )
