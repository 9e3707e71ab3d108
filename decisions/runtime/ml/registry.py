"""The model registry: ``model_versions`` in PostgreSQL.

Each version holds its metrics, feature list, training window, code version, the skops
artifact and its SHA-256 (checked before every load), and the drift reference. At most
one version per model name is active; promotion and rollback switch it in one
transaction that locks the model's rows, so two promotions never leave two active.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, insert, select, text, update

from decisions.core.errors import NotFound
from decisions.core.models import ModelVersion
from decisions.runtime.ml.artifact import CompiledModel, dumps, loads, sha256
from decisions.runtime.ml.features import feature_code_version


@dataclass(frozen=True)
class VersionInfo:
    id: int
    name: str
    version: int
    active: bool
    algorithm: str
    metrics: dict[str, Any]
    features: list[str]
    train_from: datetime | None
    train_to: datetime | None
    code_version: str
    sha256: str
    created_at: datetime

    @property
    def roc_auc(self) -> float | None:
        value = self.metrics.get("holdout", {}).get("roc_auc")
        return float(value) if value is not None else None


_COLUMNS = (
    ModelVersion.id, ModelVersion.name, ModelVersion.version, ModelVersion.active,
    ModelVersion.algorithm, ModelVersion.metrics, ModelVersion.features,
    ModelVersion.train_from, ModelVersion.train_to, ModelVersion.code_version,
    ModelVersion.sha256, ModelVersion.created_at,
)


def _info(row: Any) -> VersionInfo:
    return VersionInfo(*row)


@cache
def code_version() -> str:
    """Package version, git commit (when run from a checkout) and feature-code hash."""
    try:
        version = metadata.version("decisions")
    except metadata.PackageNotFoundError:
        version = "0"
    root = Path(__file__).resolve().parents[3]
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    git = f"+g{sha}" if sha else ""
    return f"{version}{git} features:{feature_code_version()}"


def register(
    engine: Engine,
    model: CompiledModel,
    *,
    algorithm: str,
    metrics: dict[str, Any],
    train_from: datetime | None,
    train_to: datetime | None,
    reference: dict[str, Any],
) -> VersionInfo:
    """Store a new (inactive) version; its number is one more than the model's last."""
    artifact = dumps(model)
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
                     {"k": f"decisions.core.models.{model.name}"})
        last = conn.execute(
            select(func.max(ModelVersion.version)).where(ModelVersion.name == model.name)
        ).scalar()
        row = conn.execute(
            insert(ModelVersion)
            .values(
                name=model.name,
                version=int(last or 0) + 1,
                active=False,
                algorithm=algorithm,
                metrics=metrics,
                features=list(model.features),
                train_from=train_from,
                train_to=train_to,
                code_version=code_version(),
                artifact=artifact,
                sha256=sha256(artifact),
                reference=reference,
            )
            .returning(*_COLUMNS)
        ).one()
    return _info(row)


def activate(engine: Engine, name: str, version: int) -> VersionInfo:
    """Make ``version`` the one active version of ``name``."""
    with engine.begin() as conn:
        rows = conn.execute(
            select(ModelVersion.id, ModelVersion.version)
            .where(ModelVersion.name == name)
            .with_for_update()
        ).all()
        if version not in {v for _, v in rows}:
            raise NotFound(f"model {name!r} has no version {version}")
        conn.execute(
            update(ModelVersion)
            .where(ModelVersion.name == name)
            .values(active=ModelVersion.version == version)
        )
        row = conn.execute(
            select(*_COLUMNS).where(ModelVersion.name == name, ModelVersion.version == version)
        ).one()
    return _info(row)


def deactivate(engine: Engine, name: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(ModelVersion).where(ModelVersion.name == name).values(active=False))


def versions(engine: Engine, name: str | None = None) -> list[VersionInfo]:
    query = select(*_COLUMNS).order_by(ModelVersion.name, ModelVersion.version)
    if name is not None:
        query = query.where(ModelVersion.name == name)
    with engine.connect() as conn:
        return [_info(r) for r in conn.execute(query)]


def get(engine: Engine, name: str, version: int | None = None) -> VersionInfo:
    """One version, or the active one when ``version`` is None."""
    query = select(*_COLUMNS).where(ModelVersion.name == name)
    query = query.where(
        ModelVersion.active.is_(True) if version is None else ModelVersion.version == version
    )
    with engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        what = "no active version" if version is None else f"no version {version}"
        raise NotFound(f"model {name!r} has {what}")
    return _info(row)


def active_heads(engine: Engine) -> dict[str, tuple[int, int, str]]:
    """Cheap poll: ``name -> (row id, version, sha256)`` of the active versions."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(ModelVersion.name, ModelVersion.id, ModelVersion.version, ModelVersion.sha256)
            .where(ModelVersion.active.is_(True))
        ).all()
    return {name: (id_, version, digest) for name, id_, version, digest in rows}


def load(engine: Engine, row_id: int, expected_sha256: str | None = None) -> CompiledModel:
    """Load a version's artifact; the checksum is verified before the bytes are parsed.

    ``expected_sha256`` (from an earlier poll) guards against the row changing between
    the poll and the load as well as against a tampered artifact.
    """
    with engine.connect() as conn:
        row = conn.execute(
            select(ModelVersion.artifact, ModelVersion.sha256).where(ModelVersion.id == row_id)
        ).first()
    if row is None:
        raise NotFound(f"model version row {row_id} does not exist")
    artifact, digest = bytes(row[0]), str(row[1])
    if expected_sha256 is not None and digest != expected_sha256:
        raise NotFound(f"model version row {row_id} changed while loading")
    return loads(artifact, digest)


def load_version(
    engine: Engine, name: str, version: int | None = None
) -> tuple[VersionInfo, CompiledModel]:
    info = get(engine, name, version)
    return info, load(engine, info.id, info.sha256)


def reference(engine: Engine, row_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        value = conn.execute(
            select(ModelVersion.reference).where(ModelVersion.id == row_id)
        ).scalar()
    return dict(value or {})


def record_drift(engine: Engine, row_id: int, result: dict[str, Any]) -> None:
    """Keep the last drift comparison with the version (workers export it as metrics)."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE model_versions SET reference = jsonb_set(reference, '{last_drift}', "
                "CAST(:d AS jsonb)) WHERE id = :id"
            ),
            {"d": _json(result), "id": row_id},
        )


def last_drift(engine: Engine) -> dict[str, dict[str, Any]]:
    """``name -> last drift result`` of the active versions (small; read on refresh)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT name, reference -> 'last_drift' FROM model_versions WHERE active")
        ).all()
    return {name: dict(value) for name, value in rows if value}


def _json(value: Any) -> str:
    import json

    return json.dumps(value)
