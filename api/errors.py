"""The one place that maps exceptions to the one JSON error shape (``DecisionsError.to_dict``)."""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from api.responses import JSONBody
from decisions.core.errors import DecisionsError, FieldError

log = logging.getLogger("api")

HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
              406: "not_acceptable", 413: "payload_too_large", 415: "unsupported_media_type"}


class BadRequest(DecisionsError):
    code = "bad_request"
    status = 400


class PayloadTooLarge(DecisionsError):
    code = "payload_too_large"
    status = 413


def error_response(exc: DecisionsError) -> Response:
    headers: dict[str, str] = {"Cache-Control": "no-store"}
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    elif exc.status == 503:
        headers["Retry-After"] = "1"
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="decisions"'
    return JSONBody(exc.to_dict(), status_code=exc.status, headers=headers)


async def decisions_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DecisionsError)
    return error_response(exc)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = HTTP_CODES.get(exc.status_code, "error")
    body: dict[str, Any] = {"error": {"code": code, "message": str(exc.detail)}}
    return JSONBody(body, status_code=exc.status_code, headers=dict(exc.headers or {}))


async def internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    body = {"error": {"code": "internal_error", "message": "internal server error"}}
    return JSONBody(body, status_code=500)


EXCEPTION_HANDLERS: dict[Any, Any] = {
    DecisionsError: decisions_error,
    HTTPException: http_error,
    Exception: internal_error,
}

__all__ = ["BadRequest", "EXCEPTION_HANDLERS", "FieldError", "PayloadTooLarge",
           "error_response", "internal_error"]
