"""One exception hierarchy; ``to_dict`` is the one JSON error shape everywhere.

Shape: ``{"error": {"code": "...", "message": "...", "details": [{"field": ..., "message": ...}]}}``
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.field}: {self.message}" if self.field else f"{where}{self.message}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.field, "message": self.message}
        if self.line is not None:
            out["line"] = self.line
        return out


class DecisionsError(Exception):
    code = "error"
    status = 500

    def __init__(self, message: str, details: list[FieldError] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = [d.to_dict() for d in self.details]
        return {"error": body}

    def __str__(self) -> str:
        if not self.details:
            return self.message
        return self.message + "\n" + "\n".join(f"  {d}" for d in self.details)


class ConfigError(DecisionsError):
    code = "config_error"


class ValidationError(DecisionsError):
    code = "validation_error"
    status = 422


class NotFound(DecisionsError):
    code = "not_found"
    status = 404


class Conflict(DecisionsError):
    code = "conflict"
    status = 409


class Unauthorized(DecisionsError):
    code = "unauthorized"
    status = 401


class Forbidden(DecisionsError):
    code = "forbidden"
    status = 403


class RateLimited(DecisionsError):
    code = "rate_limited"
    status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServiceUnavailable(DecisionsError):
    """A dependency cannot be reached. From the command line it names the service, the URL
    tried and the setting to change; from the API, the service and when to retry."""

    code = "service_unavailable"
    status = 503

    def __init__(self, service: str, url: str = "", setting: str = "", reason: str = "",
                 *, retry_after: int | None = None) -> None:
        why = f" ({reason})" if reason else ""
        if url:
            message = (f"cannot reach {service} at {url}{why}; "
                       f"start it or set {setting} to a reachable one")
        else:
            message = f"{service} is unavailable{why}; retry later"
        super().__init__(message)
        self.service = service
        self.url = url
        self.setting = setting
        self.retry_after = retry_after
