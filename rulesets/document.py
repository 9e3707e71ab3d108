"""Read ruleset documents (JSON or YAML) keeping the line of every value for error messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from decisions.core.errors import FieldError, ValidationError

Lines = dict[str, int]


def _walk(node: yaml.Node, path: str, lines: Lines) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = str(key.value)
            child = f"{path}.{name}" if path else name
            lines[child] = key.start_mark.line + 1
            _walk(value, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, f"{path}[{i}]", lines)


def parse_text(text: str, source: str = "<document>") -> tuple[Any, Lines]:
    """Parse JSON or YAML text; a syntax error names the source and the line."""
    lines: Lines = {}
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError(
                f"{source}: not valid JSON", [FieldError("", exc.msg, exc.lineno)]
            ) from None
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            problem = getattr(exc, "problem", None) or str(exc)
            raise ValidationError(
                f"{source}: not valid YAML", [FieldError("", str(problem), line)]
            ) from None
    try:
        node = yaml.compose(text)  # JSON is YAML too: same line map for both
        if node is not None:
            _walk(node, "", lines)
    except yaml.YAMLError:
        pass
    return data, lines


def read_file(path: str | Path) -> tuple[Any, Lines]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValidationError(f"{p}: cannot read ({exc.strerror})") from None
    return parse_text(text, str(p))


def line_of(lines: Lines, path: str) -> int | None:
    """The line of ``path`` or of its nearest ancestor that has one."""
    while path:
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return lines.get("")  # the document itself


def dump_yaml(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
