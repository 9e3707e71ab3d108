"""Compact JSON responses: orjson, gzip for large bodies, ETag and 304 for cacheable reads."""

from __future__ import annotations

import gzip
import hashlib
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

JSON = "application/json"


def dumps(data: Any) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)


class JSONBody(Response):
    media_type = JSON

    def render(self, content: Any) -> bytes:
        return content if isinstance(content, bytes) else dumps(content)


def etag_of(body: bytes) -> str:
    """A weak validator: the same JSON, whatever its content encoding, is the same entity."""
    return 'W/"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


def _matches(if_none_match: str, etag: str) -> bool:
    if if_none_match.strip() == "*":
        return True
    wanted = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == wanted for tag in if_none_match.split(","))


def json_response(
    request: Request,
    data: Any,
    *,
    status: int = 200,
    max_age: int | None = None,
    gzip_min: int = 1024,
    headers: dict[str, str] | None = None,
) -> Response:
    """``max_age`` makes the response cacheable: ETag, Cache-Control, 304 on a match."""
    body = dumps(data)
    out_headers = dict(headers or {})
    if max_age is not None:
        etag = etag_of(body)
        out_headers["ETag"] = etag
        out_headers["Cache-Control"] = f"private, max-age={max_age}"
        out_headers["Vary"] = "Accept-Encoding, Authorization"
        inm = request.headers.get("if-none-match")
        if inm and status == 200 and _matches(inm, etag):
            return Response(status_code=304, headers=out_headers)
    else:
        out_headers.setdefault("Cache-Control", "no-store")
    if len(body) >= gzip_min and "gzip" in request.headers.get("accept-encoding", ""):
        body = gzip.compress(body, compresslevel=5, mtime=0)
        out_headers["Content-Encoding"] = "gzip"
        out_headers.setdefault("Vary", "Accept-Encoding")
    return JSONBody(body, status_code=status, headers=out_headers)
