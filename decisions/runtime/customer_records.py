"""Customer records from a CRM: checked, read from CSV / JSON Lines, upserted into ``customers``.

One record shape for ``decisions customers import FILE`` and ``PUT /v1/customers/{id}``,
flat: ``user_id`` (``id`` also accepted in files), ``tier``, ``country`` (ISO 3166 alpha-2),
``signup_date`` (``YYYY-MM-DD``), ``segments`` (a list; in CSV, comma-separated) and any
other name (``lifetime_value``, ``plan`` …) as a custom attribute (a number, a string or a
boolean), read by rules as ``customer.<name>``. An empty CSV cell or a JSON ``null`` means
"not known". ``consent`` is not part of the record: it changes only through consent events.

A record replaces the customer's attributes as a whole (the same file imported twice leaves
the same rows: idempotent); the customer's consent is kept. A file is read line by line:
a bad line is reported with its number and field and skipped, the good lines are written.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import orjson
from sqlalchemy import Engine, text
from sqlalchemy.dialects.postgresql import insert

from decisions.core.db import utcnow
from decisions.core.errors import FieldError
from decisions.core.events import MAX_NUMBER, check_id
from decisions.core.models import Customer
from rulesets.language import ATTRIBUTE_NAME

COLUMNS = ("tier", "country", "signup_date", "segments")
# names a record cannot use: the key, what the customers row derives or keeps itself
RESERVED = {"consent": "consent changes only through consent events (type consent)",
            "signup_days": "derived from signup_date", "attributes": "put custom attributes "
            "at the top level of the record", "updated_at": "set when the record is stored"}
NAME = ATTRIBUTE_NAME  # the names rules read as customer.<name> (rulesets/language.py)
_NUMBER = re.compile(r"^-?\d{1,16}(\.\d{1,16})?([eE][+-]?\d{1,3})?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_COUNTRY = re.compile(r"^[A-Za-z]{2}$")
MAX_TIER, MAX_STRING, MAX_ATTRIBUTES, MAX_SEGMENTS, MAX_SEGMENT = 50, 500, 50, 100, 100
SUFFIXES = (".csv", ".jsonl", ".ndjson")


@dataclass(frozen=True)
class CustomerRecord:
    user_id: str
    tier: str | None = None
    country: str | None = None
    signup_date: date | None = None
    segments: tuple[str, ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The record as the API and files write it (flat)."""
        return {"user_id": self.user_id, "tier": self.tier, "country": self.country,
                "signup_date": self.signup_date.isoformat() if self.signup_date else None,
                "segments": list(self.segments), **self.attributes}


def _text_problem(value: str, limit: int) -> str | None:
    if len(value) > limit:
        return f"longer than {limit} characters"
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "not valid UTF-8"
    return None


def _string(name: str, value: Any, limit: int, errors: list[FieldError],
            line: int | None) -> str | None:
    if not isinstance(value, str):
        errors.append(FieldError(name, "expected a string", line))
        return None
    problem = _text_problem(value, limit)
    if problem:
        errors.append(FieldError(name, problem, line))
        return None
    return value.strip() or None


def _attribute(name: str, value: Any, from_csv: bool, errors: list[FieldError],
               line: int | None) -> Any:
    if from_csv and isinstance(value, str):  # CSV cells are text: numbers and booleans read back
        cell = value.strip()
        if _NUMBER.match(cell):
            number = int(cell) if cell.lstrip("-").isdigit() else float(cell)
            if math.isfinite(number) and abs(number) <= MAX_NUMBER:
                value = number  # else it stays text (a code such as 1E100)
        elif cell.lower() in ("true", "false"):
            value = cell.lower() == "true"
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        if not math.isfinite(value) or abs(value) > MAX_NUMBER:
            errors.append(FieldError(name, f"expected a number from -{MAX_NUMBER} to "
                                           f"{MAX_NUMBER}", line))
            return None
        return value
    if isinstance(value, str):
        return _string(name, value, MAX_STRING, errors, line)
    errors.append(FieldError(name, "expected a number, a string or true/false", line))
    return None


def parse_record(data: Any, line: int | None = None, *, user_id: str | None = None,
                 from_csv: bool = False) -> tuple[CustomerRecord | None, list[FieldError]]:
    """One record, or the errors that name its fields (and ``line``). ``user_id``: given by
    the caller (the API's path); the record may then repeat it but not contradict it."""
    if not isinstance(data, dict):
        return None, [FieldError("", "expected a JSON object", line)]
    errors: list[FieldError] = []
    data = {k: (None if from_csv and v == "" else v) for k, v in data.items()}
    if "id" in data and "user_id" in data:
        errors.append(FieldError("id", "give user_id or id, not both", line))
    given = data.pop("user_id", None)
    given = data.pop("id", None) if given is None else given
    if user_id is not None:
        if given is not None and given != user_id:
            errors.append(FieldError("user_id", "differs from the id in the path", line))
        given = user_id
    elif (problem := check_id(given)) is not None:
        errors.append(FieldError("user_id", "required" if given is None else problem, line))
    tier = country = None
    signup: date | None = None
    segments: list[str] = []
    attributes: dict[str, Any] = {}
    for name, value in data.items():
        if name == "":  # a CSV header's trailing comma
            if value is not None:
                errors.append(FieldError("(unnamed column)", "a value under a column "
                                         "without a name in the header", line))
            continue
        if not isinstance(name, str) or not NAME.match(name):
            shown = name if isinstance(name, str) and len(name) <= 60 else repr(name)[:60]
            errors.append(FieldError(str(shown), "unknown field: a custom attribute's name is "
                                     "lowercase letters, digits and _ (at most 41)", line))
            continue
        if name in RESERVED:
            errors.append(FieldError(name, RESERVED[name], line))
            continue
        if value is None:
            continue
        if name == "tier":
            tier = _string(name, value, MAX_TIER, errors, line)
        elif name == "country":
            if not isinstance(value, str) or not _COUNTRY.match(value.strip()):
                errors.append(FieldError(name, "expected a two-letter ISO country code", line))
            else:
                country = value.strip().upper()
        elif name == "signup_date":
            signup = _date(value, errors, line)
        elif name == "segments":
            segments = _segments(value, from_csv, errors, line)
        else:
            parsed = _attribute(name, value, from_csv, errors, line)
            if parsed is not None:
                attributes[name] = parsed
    if len(attributes) > MAX_ATTRIBUTES:
        errors.append(FieldError("", f"more than {MAX_ATTRIBUTES} custom attributes", line))
    if errors:
        return None, errors
    return CustomerRecord(str(given), tier, country, signup, tuple(segments), attributes), []


def _date(value: Any, errors: list[FieldError], line: int | None) -> date | None:
    if isinstance(value, str) and _DATE.match(value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    errors.append(FieldError("signup_date", "expected a date as YYYY-MM-DD", line))
    return None


def _segments(value: Any, from_csv: bool, errors: list[FieldError],
              line: int | None) -> list[str]:
    if from_csv and isinstance(value, str):
        value = [s for s in (part.strip() for part in value.split(",")) if s]
    if not isinstance(value, list) or len(value) > MAX_SEGMENTS:
        errors.append(FieldError("segments", f"expected a list of at most {MAX_SEGMENTS} "
                                             "segment names", line))
        return []
    out: list[str] = []
    for item in value:
        name = _string("segments", item, MAX_SEGMENT, errors, line)
        if name and name not in out:
            out.append(name)
    return out


@dataclass
class FileReport:
    """What a file held: the good records (the last one of a repeated id), the bad lines'
    errors, and how many lines were read."""

    records: list[CustomerRecord] = field(default_factory=list)
    errors: list[FieldError] = field(default_factory=list)
    lines: int = 0
    repeated: int = 0


def parse_bytes(data: bytes, suffix: str) -> FileReport:
    """Parse a file's content; never raises for its content (every fault is a line's
    error). ``suffix``: ``.csv``, else JSON Lines."""
    text_ = data.decode("utf-8", errors="surrogateescape")
    if text_.startswith("\ufeff"):
        text_ = text_[1:]
    rows = _csv_rows(text_) if suffix == ".csv" else _jsonl_rows(text_)
    report = FileReport()
    by_id: dict[str, CustomerRecord] = {}
    for number, row, problem in rows:
        report.lines = max(report.lines, number)
        if problem is not None:
            report.errors.append(problem)
            continue
        record, errors = parse_record(row, number, from_csv=suffix == ".csv")
        report.errors.extend(errors)
        if record is not None:
            if record.user_id in by_id:
                report.repeated += 1
                del by_id[record.user_id]
            by_id[record.user_id] = record
    report.records = list(by_id.values())
    return report


_Row = tuple[int, Any, FieldError | None]


def _jsonl_rows(text_: str) -> list[_Row]:
    rows: list[_Row] = []
    for number, line in enumerate(text_.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            raw = line.encode("utf-8")
        except UnicodeEncodeError:
            rows.append((number, None, FieldError("", "not valid UTF-8", number)))
            continue
        try:
            rows.append((number, orjson.loads(raw), None))
        except orjson.JSONDecodeError as exc:
            rows.append((number, None, FieldError("", f"invalid JSON ({exc.msg})", number)))
    return rows


def _csv_rows(text_: str) -> list[_Row]:
    rows: list[_Row] = []
    reader = csv.reader(io.StringIO(text_, newline=""))
    header: list[str] | None = None
    start = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            rows.append((start, None, FieldError("", f"unreadable CSV ({exc})", start)))
            start = reader.line_num + 1
            continue
        number, start = start, reader.line_num + 1
        if not any(c.strip() for c in cells):
            continue
        if header is None:
            header = [c.strip().lstrip("\ufeff") for c in cells]
            if "user_id" not in header and "id" not in header:
                rows.append((number, None, FieldError(
                    "user_id", "missing column in the header (user_id or id)", number)))
                return rows
            continue
        if len(cells) > len(header):
            rows.append((number, None, FieldError(
                "", f"{len(cells)} cells for {len(header)} columns", number)))
            continue
        rows.append((number, dict(zip(header, cells, strict=False)), None))
    return rows


def upsert(engine: Engine, records: list[CustomerRecord]) -> tuple[int, int]:
    """Write the records (replacing each customer's attributes, keeping consent);
    ``(created, updated)``."""
    created = updated = 0
    now = utcnow()
    with engine.begin() as conn:
        for start in range(0, len(records), 1000):
            chunk = records[start : start + 1000]
            stmt = insert(Customer).values([
                {"user_id": r.user_id, "tier": r.tier, "country": r.country,
                 "signup_date": r.signup_date, "segments": list(r.segments),
                 "attributes": r.attributes, "updated_at": now}
                for r in chunk])
            upserting = stmt.on_conflict_do_update(
                index_elements=[Customer.user_id],
                set_={k: stmt.excluded[k] for k in ("tier", "country", "signup_date",
                                                    "segments", "attributes", "updated_at")},
            ).returning(text("(xmax = 0) AS inserted"))
            for row in conn.execute(upserting):
                if row.inserted:
                    created += 1
                else:
                    updated += 1
    return created, updated
