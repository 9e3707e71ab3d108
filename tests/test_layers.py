"""The floors of the code, kept by a test: no import may run up a floor.

    decisions.cli        the command line, the embedded stack, the demo, migrations
    api | admin          the storefront API and the marketers' UI (never each other)
    decisions.simulate   dry runs, try-it, backtests
    decisions.runtime    state, rules engine host, actions, archive, Kafka, the worker
    rulesets             the rule language: catalog, validation, compilation, the store
    decisions.core       errors, settings, db, the event contract, keys, metrics, RESP

Every import is checked, including those inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("decisions", "rulesets", "api", "admin")
FLOORS = (  # lowest first; a module may import its own floor and those below
    ("decisions.core", "decisions"),
    ("rulesets",),
    ("decisions.runtime",),
    ("decisions.simulate",),
    ("api", "admin"),
    ("decisions.cli",),
)
SIBLINGS_APART = {"api": "admin", "admin": "api"}


def floor_of(module: str) -> tuple[int, str]:
    """The floor of a module and the name of the floor's part it belongs to."""
    best: tuple[int, str, int] | None = None
    for level, parts in enumerate(FLOORS):
        for part in parts:
            if module == part or module.startswith(part + "."):
                if best is None or len(part) > best[2]:
                    best = (level, part, len(part))
    assert best is not None, f"{module} is on no floor: add it to tests/test_layers.py"
    return best[0], best[1]


def imports() -> list[tuple[str, int, str]]:
    """(importing module path, line, imported module) for every import of our packages."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                names: list[str] = []
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                for name in names:
                    if name.split(".")[0] in PACKAGES and _exists(name):
                        found.append((str(path.relative_to(ROOT)), node.lineno, name))
    return found


def _exists(name: str) -> bool:
    path = ROOT / name.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def module_of(path: str) -> str:
    module = path[:-3].replace("/", ".")
    return module.removesuffix(".__init__")


def violations(found: list[tuple[str, int, str]]) -> list[str]:
    out = []
    for path, line, name in found:
        here = module_of(path)
        (mine, my_part), (theirs, their_part) = floor_of(here), floor_of(name)
        if theirs > mine:
            out.append(f"{path}:{line} imports {name}: up from {my_part} to {their_part}")
        elif SIBLINGS_APART.get(my_part) == their_part:
            out.append(f"{path}:{line} imports {name}: {my_part} never imports {their_part}")
    return out


def test_no_import_runs_up_a_floor() -> None:
    assert violations(imports()) == []


def test_only_the_kafka_wrapper_imports_kafka_python() -> None:
    """kafka-python's types stay inside decisions/runtime/kafka.py (our wrapper)."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module
                         else [a.name for a in node.names] if isinstance(node, ast.Import)
                         else [])
                if any(n == "kafka" or n.startswith("kafka.") for n in names):
                    found.append(str(path.relative_to(ROOT)))
    assert sorted(set(found)) == ["decisions/runtime/kafka.py"]


def test_every_module_is_on_a_floor() -> None:
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            floor_of(module_of(str(path.relative_to(ROOT))))


def test_the_check_reports_what_runs_up() -> None:
    """The check can fail: upward and sideways imports are reported, downward ones not."""
    found = [("decisions/core/keys.py", 3, "decisions.runtime.worker"),
             ("rulesets/compile.py", 4, "decisions.runtime.engine"),
             ("api/app.py", 5, "admin.app"),
             ("decisions/runtime/worker.py", 6, "decisions.simulate.dryrun"),
             ("decisions/cli/up.py", 7, "api.app"),
             ("decisions/runtime/worker.py", 8, "rulesets.store")]
    assert [v.split(" imports ")[0] for v in violations(found)] == [
        "decisions/core/keys.py:3", "rulesets/compile.py:4", "api/app.py:5",
        "decisions/runtime/worker.py:6"]
