"""The rule editor's form <-> the rule document.

Every input is named by its document path (``rules[0].when.all[1].value``), so the
errors ``rulesets.validate`` reports land next to the input they concern. Form values
are converted by the field's type from the language catalog; a value that does not
convert is kept as typed, so validation names it instead of the form dropping it.

Helper inputs start with ``_``: ``<group>._kind`` (all/any), ``<action>._kind``
(discount/recommend/add_segment), ``<action>.discount._type`` / ``._value``.

What a trip through the form would keep of a rule is ``admin.roundtrip``'s.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from rulesets.language import (
    ACTION_CATALOG,
    ACTIONS,
    BOOL,
    FIELD_FAMILIES,
    FIELDS,
    LIST,
    NUMBER,
    OPERATOR_LABELS,
    OPERATORS,
    RULE_PARAM_GROUPS,
    STATE_TYPES,
    STRING,
    Field,
    field_type,
)

Form = Mapping[str, Any]
# action -> (param, type, label) shown as fields; discount's percent/amount is the
# _type/_value pair. From the language's action catalog (rulesets.language).
ACTION_PARAMS: dict[str, tuple[tuple[str, str, str], ...]] = {
    name: tuple((p.name, p.type, p.label) for p in spec.params if p.in_form)
    for name, spec in ACTION_CATALOG.items()}
ACTION_LABELS = {name: spec.label for name, spec in ACTION_CATALOG.items()}
SOURCES = (("event", "Event"), ("state", "User state"), ("customer", "Customer"),
           ("user", "Segments"), ("time", "Time"), ("score", "Model scores"))


def new_rule() -> dict[str, Any]:
    return {"name": "", "description": "", "priority": 0, "enabled": True,
            "when": {"all": [{"field": "event.type", "op": "eq", "value": "add_to_cart"}]},
            "then": [{"discount": {"percent": 10, "expires_minutes": 60}}]}


def _text(form: Form, name: str) -> str:
    value = form.get(name, "")
    return value.strip() if isinstance(value, str) else ""


def number(raw: str) -> Any:
    """"12" -> 12, "12.5" -> 12.5, anything else stays the string typed."""
    try:
        value = float(raw)
    except ValueError:
        return raw
    return int(value) if value.is_integer() and "." not in raw and "e" not in raw.lower() \
        else value


def typed(ftype: str | None, raw: str) -> Any:
    if ftype == NUMBER:
        return number(raw)
    if ftype == BOOL:
        return {"true": True, "false": False}.get(raw.lower(), raw)
    return raw


def _indices(form: Form, prefix: str) -> list[tuple[str, int]]:
    """``(kind, index)`` of the children ``prefix.all[i]`` / ``prefix.any[i]`` in the form."""
    pattern = re.compile(re.escape(prefix) + r"\.(all|any)\[(\d+)\]")
    found = set()
    for key in form:
        m = pattern.match(key)
        if m:
            found.add((m[1], int(m[2])))
    return sorted(found, key=lambda t: t[1])


def parse_node(form: Form, path: str) -> dict[str, Any]:
    if f"{path}.field" in form or f"{path}.op" in form:
        return parse_leaf(form, path)
    if any(k.startswith(f"{path}.not.") for k in form):
        return {"not": parse_node(form, f"{path}.not")}
    children = _indices(form, path)
    kind = _text(form, f"{path}._kind")
    if kind not in ("all", "any"):
        kind = children[0][0] if children else "all"
    return {kind: [parse_node(form, f"{path}.{k}[{i}]") for k, i in children]}


def parse_leaf(form: Form, path: str) -> dict[str, Any]:
    field = _text(form, f"{path}.field")
    if field in FAMILIES:  # a family picked in the field picker: its parts name the field
        field = compose(form, path, FAMILIES[field])
    op = _text(form, f"{path}.op")
    leaf: dict[str, Any] = {"field": field, "op": op}
    ftype = field_type(field)
    kind = OPERATORS[op][1] if op in OPERATORS else "same"
    if kind == "none":
        return leaf
    if kind == "range":
        low, high = _text(form, f"{path}.value[0]"), _text(form, f"{path}.value[1]")
        if low or high:
            leaf["value"] = [number(low), number(high)]
        return leaf
    raw = _text(form, f"{path}.value")
    if not raw:
        return leaf
    if kind == "list":
        items = [p.strip() for p in raw.split(",") if p.strip()]
        leaf["value"] = [typed(ftype, p) for p in items]
    elif kind == "element":
        leaf["value"] = raw
    else:
        leaf["value"] = typed(ftype, raw)
    return leaf


def parse_action(form: Form, path: str) -> dict[str, Any]:
    kind = _text(form, f"{path}._kind")
    if kind not in ACTIONS:
        return {kind or "action": {}}
    params: dict[str, Any] = {}
    if kind == "discount":
        dtype = _text(form, f"{path}.discount._type") or "percent"
        raw = _text(form, f"{path}.discount._value")
        if raw:
            params[dtype if dtype in ("percent", "amount") else "percent"] = number(raw)
    params.update(_params(form, f"{path}.{kind}", ACTION_PARAMS[kind]))
    return {kind: params}


def _params(form: Form, path: str, params: Any) -> dict[str, Any]:
    """The parameters (``ActionParam`` or ``(name, type, label)``) filled in at ``path``."""
    out: dict[str, Any] = {}
    for param in params:
        name, ptype = (param.name, param.type) if hasattr(param, "name") else param[:2]
        raw = _text(form, f"{path}.{name}")
        if not raw:
            continue
        if ptype == LIST:
            out[name] = [p.strip() for p in raw.split(",") if p.strip()]
        else:
            out[name] = typed(ptype, raw)
    return out


def parse_rule(form: Form, index: int) -> dict[str, Any]:
    p = f"rules[{index}]"
    rule: dict[str, Any] = {"name": _text(form, f"{p}.name")}
    description = _text(form, f"{p}.description")
    if description:
        rule["description"] = description
    priority = _text(form, f"{p}.priority")
    if priority:
        rule["priority"] = number(priority)
    rule["enabled"] = f"{p}.enabled" in form
    active = {}
    for key in ("from", "until"):
        raw = _text(form, f"{p}.active.{key}")
        if raw:
            active[key] = _utc(raw)
    if active:
        rule["active"] = active
    for group, (_, params) in RULE_PARAM_GROUPS.items():
        values = _params(form, f"{p}.{group}", params)
        if values:
            rule[group] = values
    rule["when"] = parse_node(form, f"{p}.when")
    pattern = re.compile(re.escape(p) + r"\.then\[(\d+)\]\._kind$")
    actions = sorted(int(m[1]) for k in form if (m := pattern.match(k)))
    rule["then"] = [parse_action(form, f"{p}.then[{j}]") for j in actions]
    return rule


def _utc(raw: str) -> str:
    """A ``datetime-local`` value (no zone) is read as UTC."""
    if re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d", raw):
        return raw + ":00Z"
    if re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", raw):
        return raw + "Z"
    return raw


def parse_settings(form: Form) -> dict[str, Any]:
    """The ruleset-level fields: name, description, stacking, four_eyes."""
    out: dict[str, Any] = {"name": _text(form, "name"), "description": _text(form, "description")}
    out["stacking"] = "stacking" in form
    out["four_eyes"] = "four_eyes" in form
    return out


# -- rendering helpers ---------------------------------------------------------------
def value_text(node: dict[str, Any]) -> str:
    """The text a single value input shows (lists comma-separated, booleans lower case)."""
    value = node.get("value")
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(value_text({"value": v}) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def range_text(node: dict[str, Any], i: int) -> str:
    value = node.get("value")
    if isinstance(value, list) and len(value) > i:
        return value_text({"value": value[i]})
    return ""


def value_kind(node: dict[str, Any]) -> str:
    op = node.get("op")
    return OPERATORS[op][1] if op in OPERATORS else "same"


RULESET_ORDER = ("name", "description", "stacking", "four_eyes", "rules")
RULE_ORDER = ("name", "description", "priority", "enabled", "active", *RULE_PARAM_GROUPS,
              "when", "then")
LEAF_ORDER = ("field", "op", "value")


def _ordered(d: dict[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    head = {k: d[k] for k in order if k in d}
    return head | {k: v for k, v in d.items() if k not in head}


def canonical_node(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    if "field" in node or "op" in node:
        return _ordered(node, LEAF_ORDER)
    return {k: [canonical_node(c) for c in v] if isinstance(v, list) else canonical_node(v)
            for k, v in node.items()}


def canonical_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """Keys in reading order (PostgreSQL's JSONB sorts them its own way); no empty
    ``active``."""
    out = _ordered(rule, RULE_ORDER)
    if not out.get("active"):
        out.pop("active", None)
    if "when" in out:
        out["when"] = canonical_node(out["when"])
    return out


def canonical(document: dict[str, Any]) -> dict[str, Any]:
    out = _ordered(document, RULESET_ORDER)
    if isinstance(out.get("rules"), list):
        out["rules"] = [canonical_rule(r) if isinstance(r, dict) else r for r in out["rules"]]
    return out


def to_source(rule: dict[str, Any], fmt: str = "yaml") -> str:
    rule = canonical_rule(rule)
    if fmt == "json":
        return json.dumps(rule, indent=2, ensure_ascii=False)
    return yaml.safe_dump(rule, sort_keys=False, allow_unicode=True, width=88)


def field_catalog() -> list[dict[str, Any]]:
    """The field picker's groups: every field the language knows, by source."""
    groups = []
    for source, label in SOURCES:
        items = [f for f in FIELDS.values() if f.path.startswith(source + ".")]
        groups.append({"label": label, "fields": items})
    return groups


def catalog_json() -> str:
    """Field types and choices, the families' parts, and which operators apply to which
    types, for editor.js."""
    fields = {f.path: {"type": f.type, "choices": list(f.choices)} for f in FIELDS.values()}
    fields |= {t: {"type": f.type, "choices": []} for t, f in FAMILIES.items()}
    return json.dumps({
        "fields": fields,
        "families": {t: {"parts": list(f.parts), "name_label": f.name_label}
                     for t, f in FAMILIES.items()},
        "operators": {op: {"types": list(types), "kind": kind, "label": OPERATOR_LABELS[op]}
                      for op, (types, kind) in OPERATORS.items()},
    })


# -- fields of the open families, chosen part by part (#23) --------------------------------
# ``state.count_<type>_<window>_<scope>`` and the like (rulesets.language.FIELD_FAMILIES)
# are any window, product, category or page: the field picker offers each family by its
# template, and the row shows inputs for its parts — ``<path>._type`` (an event type),
# ``._window`` (10m, 2h, 7d), ``._scope`` (this product / category / page, or a named
# one) and ``._name`` (the named product, category or page; a page or model name) —
# which ``compose`` turns into the field. ``family_of`` takes a field apart again, so a
# rule written in the source shows in the same inputs.
SCOPE_CHOICES: tuple[tuple[str, str], ...] = (
    ("this_product", "this product (the event's)"),
    ("this_category", "this category (the event's)"),
    ("this_page", "this page (the event's)"),
    ("product", "the product named"),
    ("category", "the category named"),
    ("page", "the page named"),
)
_THIS_SCOPES = tuple(s for s, _ in SCOPE_CHOICES if s.startswith("this_"))
_NAMED_SCOPES = tuple(s for s, _ in SCOPE_CHOICES if not s.startswith("this_"))
_PLACEHOLDER = re.compile(r"<([a-z_]+)>")


@dataclass(frozen=True)
class Family:
    template: str  # ``state.count_<type>_<window>_<scope>``
    label: str
    type: str  # the type of its fields
    parts: tuple[str, ...]  # of "type", "window", "scope", "name"
    name_label: str  # what the name input asks for
    pattern: re.Pattern[str]  # takes a field apart (leniently: a part may be missing)


def _family(template: str, label: str) -> Family:
    parts: list[str] = []
    name_label = "Name"
    regex = ""
    pos = 0
    for m in _PLACEHOLDER.finditer(template):
        regex += re.escape(template[pos:m.start()])
        pos = m.end()
        word = m[1]
        if word == "type":
            parts.append("type")
            regex += "(?P<type>" + "|".join([*STATE_TYPES, "<type>"]) + ")"
        elif word == "window":
            parts.append("window")
            regex += r"(?P<window>[^_]*)"
        elif word == "scope":
            parts += ["scope", "name"]
            name_label = "Named product id, category or page"
            regex += (r"(?P<scope>" + "|".join(_THIS_SCOPES) + "|(?P<named>"
                      + "|".join(_NAMED_SCOPES) + r")_(?P<name>.*))")
        else:
            parts.append("name")
            name_label = word.replace("_", " ").capitalize() + " name"
            regex += r"(?P<name>.*)"
    regex += re.escape(template[pos:])
    sample = _compose(template, {"type": STATE_TYPES[1], "window": "10m",
                                 "scope": "this_product", "name": "x"})
    return Family(template, label, field_type(sample) or STRING, tuple(parts), name_label,
                  re.compile(regex + "$"))


def _compose(template: str, parts: Mapping[str, str]) -> str:
    scope = parts.get("scope") or "this_product"
    name = parts.get("name") or "<name>"
    if scope not in _THIS_SCOPES:
        scope = f"{scope if scope in _NAMED_SCOPES else 'product'}_{name}"

    def part(m: re.Match[str]) -> str:
        word = m[1]
        if word == "scope":
            return scope
        if word in ("type", "window"):
            return parts.get(word) or m[0]
        return name
    return _PLACEHOLDER.sub(part, template)


FAMILIES: dict[str, Family] = {t: _family(t, label) for t, label in FIELD_FAMILIES}


def compose(form: Form, path: str, family: Family) -> str:
    """The field the parts of a family row name (a missing part stays a placeholder,
    ``<window>``, so validation shows what is missing)."""
    window = _text(form, f"{path}._window").replace(" ", "").lower()
    return _compose(family.template, {
        "type": _text(form, f"{path}._type"), "window": window,
        "scope": _text(form, f"{path}._scope"), "name": _text(form, f"{path}._name")})


def family_of(field: str) -> tuple[Family, dict[str, str]] | None:
    """The family of a field the picker does not list, with its parts; None for a field
    the picker lists or one of no family."""
    if not field or field in FIELDS:
        return None
    for family in FAMILIES.values():
        m = family.pattern.match(field)
        if m is None:
            continue
        found = {k: v for k, v in m.groupdict().items() if v is not None}
        parts = {"type": found.get("type", ""), "window": found.get("window", ""),
                 "scope": found.get("named") or found.get("scope", ""),
                 "name": found.get("name", "")}
        parts = {k: "" if v == f"<{k}>" else v for k, v in parts.items()}
        if _compose(family.template, parts) != field:
            continue
        return family, parts
    return None


def field_spec(field: str) -> Field | None:
    """The catalog's field, or one of a family (its type from the language)."""
    if field in FIELDS:
        return FIELDS[field]
    ftype = field_type(field)
    return Field(field, ftype, field_label(field)) if ftype else None


_SCOPE_WORDS = {"": "", "this_product": " of this product", "this_category": " in this category",
                "this_page": " on this page", "product": " of product {}",
                "category": " in category {}", "page": " on page {}"}


def field_label(field: str) -> str:
    """A field in words: the catalog's label, or one of a family's spelled out
    ("Count of product_view in category running-shoes in the last 10m")."""
    if field in FIELDS:
        return FIELDS[field].label
    found = family_of(field)
    if found is None or field_type(field) is None:
        return field
    family, parts = found
    if "window" in family.parts:
        scope = parts["scope"] if "scope" in family.parts else ""
        return (f"Count of {parts['type']}{_SCOPE_WORDS[scope].format(parts['name'])} "
                f"in the last {parts['window']}")
    if "type" in family.parts:
        return (f"Seconds since the last {parts['type']}"
                f"{_SCOPE_WORDS[parts['scope']].format(parts['name'])} before now")
    if _PLACEHOLDER.search(family.label):
        return _PLACEHOLDER.sub(parts["name"], family.label)
    return f"{family.label}: {parts['name']}"


class FieldLabels:
    """``field_labels.get(path, default)`` for the templates: every field in words."""

    def get(self, path: str, default: str = "") -> str:
        return field_label(path) if isinstance(path, str) else default


# -- structural edits (the editor's add/remove buttons) -------------------------------
_TOKEN = re.compile(r"([a-z_]+)(?:\[(\d+)\])?")


def _resolve(rule: dict[str, Any], path: str) -> tuple[Any, Any]:
    """(parent container, key) of ``path`` inside ``rule`` (path relative to the rule)."""
    parent: Any = None
    key: Any = None
    node: Any = rule
    for part in path.split("."):
        m = _TOKEN.fullmatch(part)
        if m is None:
            raise KeyError(path)
        parent, key = node, m[1]
        node = node[m[1]]
        if m[2] is not None:
            parent, key = node, int(m[2])
            node = node[int(m[2])]
    return parent, key


def blank_condition() -> dict[str, Any]:
    return {"field": "state.cart_value", "op": "gt"}


def edit(rule: dict[str, Any], command: str, prefix: str) -> dict[str, Any]:
    """Apply ``add_condition:<group>``, ``add_group:<group>``, ``add_not:<group>`` (a
    "none of these" group: ``{not: {any: [...]}}``), ``remove:<node>``,
    ``add_action`` or ``remove_action:<j>`` (paths as in the form) to a parsed rule."""
    verb, _, target = command.partition(":")
    rel = target[len(prefix) + 1:] if target.startswith(prefix + ".") else ""
    try:
        if verb == "add_action":
            rule["then"].append({"discount": {"percent": 10, "expires_minutes": 60}})
        elif verb == "remove_action":
            rule["then"].pop(int(target))
        elif verb in ("add_condition", "add_group", "add_not") and rel:
            parent, key = _resolve(rule, rel)
            group = parent[key]
            kind = "all" if "all" in group else "any"
            group[kind].append(blank_condition() if verb == "add_condition"
                               else {"any": [blank_condition()]} if verb == "add_group"
                               else {"not": {"any": [blank_condition()]}})
        elif verb == "remove" and rel:
            while rel.endswith(".not"):  # the group inside a NOT: remove the NOT with it
                rel = rel[:-4]
            parent, key = _resolve(rule, rel)
            if isinstance(parent, list):
                parent.pop(key)
    except (KeyError, IndexError, ValueError, TypeError):
        pass  # a stale button: nothing to do
    return rule


def _renderable_node(node: Any) -> dict[str, Any]:
    if not isinstance(node, dict):
        return {"field": "", "op": ""}
    for kind in ("all", "any"):
        if kind in node:
            children = node[kind] if isinstance(node[kind], list) else []
            return {kind: [_renderable_node(c) for c in children]}
    if "not" in node:
        return {"not": _renderable_node(node["not"])}
    leaf = {"field": str(node.get("field") or ""), "op": str(node.get("op") or "")}
    if "value" in node:
        leaf["value"] = node["value"]
    return leaf


def renderable(rule: dict[str, Any]) -> dict[str, Any]:
    """A rule parsed from hand-written source, shaped so the form can show it (what does
    not fit a form input is dropped; validation has already named it)."""
    out = dict(rule)
    out["name"] = str(rule.get("name") or "")
    out["when"] = _renderable_node(rule.get("when", {"all": []}))
    if "all" not in out["when"] and "any" not in out["when"]:
        out["when"] = {"all": [out["when"]]}
    then: list[Any] = rule["then"] if isinstance(rule.get("then"), list) else []
    out["then"] = [a if isinstance(a, dict) and len(a) == 1
                   and isinstance(next(iter(a.values())), dict) else {"discount": {}}
                   for a in then]
    if not isinstance(out.get("active"), dict):
        out.pop("active", None)
    return out


_PART = re.compile(r"(all|any|then)\[(\d+)\]|not")
_WORDS = {"field": "field", "op": "operator", "value": "value", "name": "name",
          "priority": "priority", "description": "description", "from": "from",
          "until": "until", "percent": "discount value", "amount": "discount value"}


def describe_path(path: str, index: int) -> str:
    """An error's document path in words for the summary: ``rules[0].when.all[1].value``
    -> "Condition 2: value"."""
    if not path:
        return "Ruleset"
    if path == "source":
        return "Source"
    if not path.startswith("rules["):
        return "Ruleset " + _WORDS.get(path, path.replace("_", " "))
    head, _, rest = path.partition("].")
    if head != f"rules[{index}":
        return f"Rule {int(head[6:].rstrip(']')) + 1} (another rule)"
    if rest.startswith("when"):
        numbers = [str(int(m[2]) + 1) for m in _PART.finditer(rest) if m[2] is not None]
        last = rest.rsplit(".", 1)[-1].split("[")[0]
        where = "Condition " + ".".join(numbers) if numbers else "Conditions"
        return where + (f": {_WORDS[last]}" if last in _WORDS else "")
    if rest.startswith("then"):
        numbers = [str(int(m[2]) + 1) for m in _PART.finditer(rest) if m[2] is not None]
        last = rest.rsplit(".", 1)[-1]
        where = f"Action {numbers[0]}" if numbers else "Actions"
        return where + (f": {_WORDS.get(last, last.replace('_', ' '))}"
                        if "." in rest else "")
    if rest.startswith("active"):
        return "Active " + rest.rsplit(".", 1)[-1] if "." in rest else "Active window"
    return "Rule " + _WORDS.get(rest, rest.replace("_", " "))


# -- offer economics (#19): the ruleset's holdout and frequency caps ----------------------
def parse_economics(form: Form, doc: dict[str, Any]) -> None:
    """Set (or clear) ``holdout``, ``caps`` and ``budget`` of a ruleset from its settings
    form. The holdout is entered as a percentage; a value that is not a number is kept as
    typed, so validation names it by path."""
    def number(name: str) -> Any:
        raw = _text(form, name)
        if not raw:
            return None
        try:
            value = float(raw)
        except ValueError:
            return raw
        return int(value) if value == int(value) else value

    percent = number("holdout.percent")
    experiment = _text(form, "holdout.experiment")
    if percent in (None, 0):
        doc.pop("holdout", None)
    else:
        share = round(percent / 100, 6) if isinstance(percent, int | float) else percent
        doc["holdout"] = {"share": share} | ({"experiment": experiment} if experiment else {})
    caps = {k: v for k in ("per_day", "per_week") if (v := number(f"caps.{k}")) is not None}
    if caps:
        doc["caps"] = caps
    else:
        doc.pop("caps", None)
    budget: dict[str, Any] = {k: v for k in ("amount", "grants")
                              if (v := number(f"budget.{k}")) is not None}
    if budget and (campaign := _text(form, "budget.campaign")):
        budget["campaign"] = campaign
    if budget:
        doc["budget"] = budget
    else:
        doc.pop("budget", None)
