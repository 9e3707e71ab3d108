"""App factories for ``uvicorn --factory`` in the API benchmark (one served process each).

- ``api``: the real storefront API, settings from the environment (``DECISIONS_*``);
- ``bare``: a bare Starlette endpoint returning constant JSON, the ceiling.
"""

from __future__ import annotations

import gc

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from api.app import create_app
from decisions.core.settings import Settings

CONSTANT = {"user_id": "u-1", "personalized": True, "offers": []}


def api() -> Starlette:
    return create_app(Settings.from_env(), freeze_gc=True)  # as api.serve does


async def constant(request: Request) -> JSONResponse:
    return JSONResponse(CONSTANT)


def bare() -> Starlette:
    # the API freezes what it holds at startup out of the garbage collector's sight
    # (create_app(freeze_gc=True)); the ceiling gets the same treatment
    gc.collect()
    gc.freeze()
    return Starlette(routes=[Route("/v1/users/{user_id}/offers", constant)])
