"""Render a template with the shared context."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from admin.templating import templates_of


def render(request: Request, name: str, context: dict[str, Any] | None = None,
           status: int = 200) -> Response:
    return templates_of(request).TemplateResponse(request, name, context or {},
                                                  status_code=status)
