"""Imports every model module so ``Base.metadata`` is complete (for Alembic)."""

from admin import models as admin_models
from decisions.core import models as runtime_models
from decisions.core.db import Base
from rulesets import models as ruleset_models

metadata = Base.metadata
__all__ = ["metadata", "admin_models", "runtime_models", "ruleset_models"]
