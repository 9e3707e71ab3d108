"""``uvicorn --factory api.serve:app``: the API alone, settings from the environment.

Unset service URLs are taken from a running ``decisions up`` (``var/stack.json``).
"""

from __future__ import annotations

from starlette.applications import Starlette

from api.app import create_app
from decisions.core.settings import Settings
from decisions.core.stackfile import resolve


def app() -> Starlette:
    return create_app(resolve(Settings.from_env()), freeze_gc=True)
