"""Compact JSON responses: orjson, gzip for large bodies, ETag and 304 for cacheable reads.

``encode`` builds status, headers and body once and ``json_response`` wraps that in a
Starlette ``Response``; ``encode_cacheable`` does the same for the hot reads, with the raw
ASGI headers their endpoints send themselves.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from datetime import date, datetime, time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

JSON = "application/json"
RawHeaders = list[tuple[bytes, bytes]]


def dumps(data: Any) -> bytes:
    try:
        return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:
        # orjson stops at 64-bit integers; PostgreSQL's jsonb hands a stored 1e20 back as
        # one (an export shows whatever is stored): the standard library writes any integer
        return json.dumps(data, default=_jsonable, ensure_ascii=False,
                          separators=(",", ":")).encode()


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class JSONBody(Response):
    media_type = JSON

    def render(self, content: Any) -> bytes:
        return content if isinstance(content, bytes) else dumps(content)


def etag_of(body: bytes) -> str:
    """A weak validator: the same JSON, whatever its content encoding, is the same entity.
    96 bits of SHA-256 (faster here than BLAKE2: the CPU has SHA instructions)."""
    return 'W/"' + _sha256(body).hexdigest()[:24] + '"'


_sha256 = hashlib.sha256
_VARY_HEADER = (b"vary", b"Accept-Encoding, Authorization")
_CACHE_CONTROL: dict[int, tuple[bytes, bytes]] = {}
_JSON_HEADER = (b"content-type", b"application/json")


def _matches(if_none_match: str, etag: str) -> bool:
    if if_none_match.strip() == "*":
        return True
    wanted = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == wanted for tag in if_none_match.split(","))


def encode(
    data: Any,
    *,
    status: int = 200,
    max_age: int | None = None,
    gzip_min: int = 1024,
    if_none_match: str | None = None,
    accept_encoding: str = "",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """``max_age`` makes the answer cacheable: ETag, Cache-Control, 304 on a match."""
    body = dumps(data)
    out = dict(headers or {})
    if max_age is not None:
        etag = etag_of(body)
        out["ETag"] = etag
        out["Cache-Control"] = f"private, max-age={max_age}"
        out["Vary"] = "Accept-Encoding, Authorization"
        if if_none_match and status == 200 and _matches(if_none_match, etag):
            return 304, out, b""
    else:
        out.setdefault("Cache-Control", "no-store")
    if len(body) >= gzip_min and "gzip" in accept_encoding:
        body = gzip.compress(body, compresslevel=5, mtime=0)
        out["Content-Encoding"] = "gzip"
        out.setdefault("Vary", "Accept-Encoding")
    return status, out, body


def json_response(
    request: Request,
    data: Any,
    *,
    status: int = 200,
    max_age: int | None = None,
    gzip_min: int = 1024,
    headers: dict[str, str] | None = None,
) -> Response:
    status, out, body = encode(
        data, status=status, max_age=max_age, gzip_min=gzip_min, headers=headers,
        if_none_match=request.headers.get("if-none-match"),
        accept_encoding=request.headers.get("accept-encoding", ""),
    )
    if status == 304:
        return Response(status_code=304, headers=out)
    return JSONBody(body, status_code=status, headers=out)


def encode_cacheable(
    data: Any,
    max_age: int,
    *,
    gzip_min: int = 1024,
    if_none_match: bytes | None = None,
    accept_encoding: bytes | None = None,
) -> tuple[int, RawHeaders, bytes]:
    """``encode(data, max_age=…)`` for a 200 answer, with raw ASGI headers: ETag,
    Cache-Control, Vary, 304 on a matching ``If-None-Match``, gzip from ``gzip_min`` bytes."""
    body = dumps(data)
    etag = b'W/"%b"' % _sha256(body).hexdigest()[:24].encode()  # as etag_of
    cache_control = _CACHE_CONTROL.get(max_age)
    if cache_control is None:
        cache_control = _CACHE_CONTROL[max_age] = (b"cache-control",
                                                   b"private, max-age=%d" % max_age)
    headers: RawHeaders = [(b"etag", etag), cache_control, _VARY_HEADER]
    if if_none_match and _matches(if_none_match.decode("latin-1"), etag.decode()):
        return 304, headers, b""
    if len(body) >= gzip_min and accept_encoding and b"gzip" in accept_encoding:
        body = gzip.compress(body, compresslevel=5, mtime=0)
        headers.append((b"content-encoding", b"gzip"))
    headers.append(_JSON_HEADER)
    headers.append((b"content-length", b"%d" % len(body)))
    return 200, headers, body
