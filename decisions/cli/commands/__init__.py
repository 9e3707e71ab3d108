"""CLI subcommands, one module per domain; each exposes ``register(subparsers)``.

A handler takes ``(args, settings)`` and returns an exit code. It raises
``DecisionsError`` for anything a user can fix; ``decisions.cli.main`` prints those in one
line (no traceback) and exits non-zero.
"""

MODULES = (
    "decisions.cli.commands.stack",     # up, migrate, status
    "decisions.cli.commands.worker",    # worker [--processes N]
    "decisions.cli.commands.rulesets",  # rulesets validate/import/export/publish/rollback/diff
    "decisions.cli.commands.apikeys",   # apikeys create/list/revoke
    "decisions.cli.commands.catalog",   # catalog import
    "decisions.cli.commands.customers",  # customers import (CRM attributes)
    "decisions.cli.commands.users",     # users create (admin UI accounts)
    "decisions.cli.commands.models",    # models train/retrain/list/promote/rollback/drift
    "decisions.cli.commands.events",    # events produce (send a file of events to Kafka)
    "decisions.cli.commands.report",    # report uplift (holdout experiments)
    "decisions.cli.commands.recommend",  # recommend evaluate (offline figures on a click log)
)
