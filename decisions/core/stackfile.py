"""``var/stack.json``: how scripts and other commands find a running stack."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from decisions.core.errors import ConfigError
from decisions.core.settings import Settings

KEYS = ("api_url", "admin_url", "database_url", "redis_url", "kafka_bootstrap", "api_key")


def stack_path(settings: Settings) -> Path:
    return settings.var_dir / "stack.json"


def write(settings: Settings, data: dict[str, Any]) -> Path:
    """Service URLs are stored without their passwords: a command that needs one reads it
    from the same ``DECISIONS_*_URL`` variables the stack was started with."""
    from decisions.core.db import redact

    data = {k: redact(v) if k.endswith("_url") and isinstance(v, str) else v
            for k, v in data.items()}
    path = stack_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.chmod(tmp, 0o600)  # it holds a development API key
    tmp.replace(path)
    return path


def read(settings: Settings) -> dict[str, Any] | None:
    path = stack_path(settings)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def running(settings: Settings) -> dict[str, Any] | None:
    """The stack file of a ``decisions up`` that is still alive, else None."""
    data = read(settings)
    if not data:
        return None
    pid = data.get("pid")
    if not isinstance(pid, int) or not pid_alive(pid):
        return None
    return data


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def resolve(settings: Settings) -> Settings:
    """Fill unset service URLs from a running stack's ``stack.json``."""
    data = running(settings) or {}
    return settings.with_services(
        database_url=settings.database_url or data.get("database_url") or "",
        redis_url=settings.redis_url or data.get("redis_url") or "",
        kafka_bootstrap=settings.kafka_bootstrap or data.get("kafka_bootstrap") or "",
    )


def require(settings: Settings, name: str) -> str:
    value = getattr(resolve(settings), name)
    if not value:
        raise ConfigError(
            f"no {name.replace('_', ' ')}: set DECISIONS_{name.upper()} "
            "or start the embedded stack with `decisions up`"
        )
    return str(value)


def resolve_database_url() -> str:
    return require(Settings.from_env(), "database_url")
