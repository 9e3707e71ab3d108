"""``decisions rulesets …`` run in-process against the test database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from sqlalchemy import Engine

from decisions.cli.main import main
from rulesets.store import RulesetStore
from rulesets.validate import validate
from tests.helpers import ROOT

STARTER = ROOT / "rulesets" / "starter"
BAD = """\
name: broken
rules:
  - name: a
    when:
      all:
        - {field: event.type, op: eq, value: add_to_cart}
        - {field: state.cart_value, op: gt, value: abc}
    then: [{discount: {percent: 10}}]
  - name: a
    when: {field: state.cart_value, op: gt, value: 1}
    then: [{coupon: {}}]
"""


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str,
            clean_db: Engine) -> RulesetStore:
    monkeypatch.chdir(tmp_path)  # no var/stack.json of a running stack is picked up
    monkeypatch.setenv("DECISIONS_DATABASE_URL", database_url)
    monkeypatch.setenv("USER", "tester")
    return RulesetStore(clean_db)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["rulesets", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_validate_prints_file_line_path_message(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    code, out, err = run(capsys, "validate", str(bad))
    assert code == 2 and out == ""
    assert err.splitlines() == [
        f'{bad}:7: rules[0].when.all[1].value: expected a number, got "abc"',
        f'{bad}:9: rules[1].name: duplicate rule name "a" (also rules[0])',
        f'{bad}:11: rules[1].then[0]: unknown action "coupon" (expected one of discount, '
        "recommend, add_segment, free_shipping)",
        "3 error(s)",
    ]


def test_validate_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "validate", str(STARTER))
    assert code == 0
    assert sorted(line.split(":")[0] for line in out.splitlines()) == sorted(
        str(p) for p in STARTER.glob("*.yaml"))
    (tmp_path / "good.json").write_text(json.dumps({"name": "g", "rules": [
        {"name": "r", "when": {"field": "state.cart_value", "op": "gt", "value": 1},
         "then": [{"discount": {"percent": 5}}]}]}))
    (tmp_path / "syntax.yaml").write_text("name: s\nrules:\n  - name: a\n     when: x\n")
    code, out, err = run(capsys, "validate", str(tmp_path))
    assert code == 2
    assert out == f"{tmp_path / 'good.json'}: ok (g, 1 rules)\n"
    syntax = tmp_path / "syntax.yaml"
    assert err.splitlines()[0] == f"{syntax}:4: mapping values are not allowed here"
    code, _, err = run(capsys, "validate", str(tmp_path / "missing.yaml"))
    assert code == 2 and "no such file or directory" in err


def test_import_is_all_or_nothing(tmp_path: Path, cli_env: RulesetStore,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    for path in STARTER.glob("*.yaml"):
        (tmp_path / path.name).write_text(path.read_text())
    (tmp_path / "zz-bad.yaml").write_text(BAD)
    code, _, err = run(capsys, "import", str(tmp_path))
    assert code == 2 and "3 error(s); nothing imported" in err
    assert cli_env.names() == []


def test_import_export_publish_rollback_diff_history(
    tmp_path: Path, cli_env: RulesetStore, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "import", str(STARTER))
    assert code == 0
    assert "storefront published as version 1" in out
    assert cli_env.names() == ["predictive", "recommendations", "storefront"]
    assert cli_env.versions("storefront")[0].author == "tester"
    code, out, _ = run(capsys, "import", str(STARTER / "storefront.yaml"))
    assert code == 0 and "unchanged" in out and len(cli_env.versions("storefront")) == 1

    code, out, _ = run(capsys, "export", "storefront", "--format", "json")
    exported = json.loads(out)
    assert validate(exported) == cli_env.get_version("storefront").document
    exported["rules"][0]["when"]["all"][1]["value"] = 300
    edited = tmp_path / "storefront.yaml"
    edited.write_text(yaml.safe_dump(exported))
    code, out, _ = run(capsys, "import", str(edited), "--draft", "--actor", "mona")
    assert code == 0 and "saved as a draft" in out
    assert cli_env.draft("storefront").updated_by == "mona"  # type: ignore[union-attr]
    code, out, _ = run(capsys, "diff", "storefront", "1", "draft")
    assert out.splitlines() == ["~ rule high-value-cart", "    when.all[1].value: 200 -> 300"]
    code, out, _ = run(capsys, "publish", "storefront", "--comment", "raise the bar")
    assert (code, out) == (0, "storefront: published version 2\n")
    code, out, _ = run(capsys, "diff", "storefront", "1", "2", "--json")
    assert json.loads(out)["changed"][0]["changes"] == [
        {"path": "when.all[1].value", "before": 200, "after": 300}]
    code, out, _ = run(capsys, "rollback", "storefront", "--to", "1")
    assert (code, out) == (0, "storefront: version 1 published again as version 3\n")
    code, out, _ = run(capsys, "export", "storefront", "--version", "2")
    assert validate(yaml.safe_load(out))["rules"][0]["when"]["all"][1]["value"] == 300
    code, out, _ = run(capsys, "history", "storefront")
    lines = out.splitlines()
    assert lines[0].split() == ["VERSION", "AT", "(UTC)", "AUTHOR", "APPROVED", "BY", "COMMENT"]
    assert [line.split()[0] for line in lines[1:]] == ["3", "2", "1"]
    assert "rollback to version 1" in lines[1] and "raise the bar" in lines[2]
    code, out, _ = run(capsys, "history", "storefront", "--audit")
    actions = [line.split()[3] for line in out.splitlines()[1:]]
    assert actions == ["rollback", "publish", "save_draft", "publish", "save_draft", "create"]
    code, out, _ = run(capsys, "list")
    assert out.splitlines()[1:] == ["predictive       1       2",
                                    "recommendations  1       2",
                                    "storefront       3       5"]


def test_four_eyes_publish_from_the_cli(tmp_path: Path, cli_env: RulesetStore,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    doc = yaml.safe_load((STARTER / "predictive.yaml").read_text())
    doc["four_eyes"] = True
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc))
    code, out, _ = run(capsys, "import", str(path), "--actor", "ann")
    assert code == 0 and "needs a second person's approval" in out
    code, _, err = run(capsys, "publish", "predictive", "--comment", "go", "--actor", "ann")
    assert code == 1
    assert err == 'decisions: ruleset "predictive" needs a second person to approve publishing\n'
    code, _, err = run(capsys, "publish", "predictive", "--comment", "go", "--approved-by", "ann")
    assert code == 1 and "someone other than the draft's last editor" in err
    code, out, _ = run(capsys, "publish", "predictive", "--comment", "go", "--actor", "ben",
                       "--approved-by", "ben")
    assert code == 0
    assert cli_env.versions("predictive")[0].approved_by == "ben"


def test_errors_are_one_line(cli_env: RulesetStore, capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run(capsys, "export", "nope")
    assert (code, err) == (1, 'decisions: no ruleset named "nope"\n')
    code, _, err = run(capsys, "rollback", "nope", "--to", "1")
    assert code == 1
    monkeypatch.delenv("DECISIONS_DATABASE_URL")
    code, _, err = run(capsys, "list")
    assert code == 2 and err.startswith("decisions: no database url: set DECISIONS_DATABASE_URL")
