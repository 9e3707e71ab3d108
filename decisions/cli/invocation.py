"""How the user types the ``decisions`` command in this shell, for the hints we print.

``make install`` puts the command in ``.venv/bin``, which is not on PATH unless that venv
is activated. Hints such as "create a user: decisions users create ..." must be typeable
as printed, so they name ``decisions`` only when PATH finds this very installation, and
the script's path (relative to the current folder when it is under it) otherwise.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def _installed_script() -> Path | None:
    """The ``decisions`` script of the running interpreter's environment, if any."""
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name == "decisions" and argv0.exists():
        return argv0.resolve()
    candidate = Path(sys.executable).parent / "decisions"
    return candidate.resolve() if candidate.exists() else None


def command(path_lookup: str | None = None) -> str:
    """``decisions`` when PATH finds this installation, else e.g. ``.venv/bin/decisions``.

    ``path_lookup`` overrides PATH (tests)."""
    script = _installed_script()
    if script is None:
        return "decisions"
    found = shutil.which("decisions", path=path_lookup)
    if found is not None and Path(found).resolve() == script:
        return "decisions"
    unresolved = Path(sys.argv[0]) if sys.argv and Path(sys.argv[0]).name == "decisions" \
        else Path(sys.executable).parent / "decisions"
    try:
        return str(Path(os.path.abspath(unresolved)).relative_to(Path.cwd()))
    except ValueError:
        return str(Path(os.path.abspath(unresolved)))


def path_hint(path_lookup: str | None = None) -> str:
    """One line telling how to type the bare command, or "" when it already works."""
    name = command(path_lookup)
    if name == "decisions":
        return ""
    activate = Path(name).parent / "activate"
    return (f"`decisions` is not on your PATH: type {name}, or run "
            f"`source {activate}` once in your shell to type `decisions`")
