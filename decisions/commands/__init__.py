"""CLI subcommands, one module per domain; each exposes ``register(subparsers)``.

A handler takes ``(args, settings)`` and returns an exit code. It raises
``DecisionsError`` for anything a user can fix; ``decisions.cli`` prints those in one
line (no traceback) and exits non-zero.
"""

MODULES = (
    "decisions.commands.stack",     # up, migrate, status
    "decisions.commands.worker",    # worker [--processes N]
    "decisions.commands.rulesets",  # rulesets validate/import/export/publish/rollback/diff
    "decisions.commands.apikeys",   # apikeys create/list/revoke
    "decisions.commands.catalog",   # catalog import
    "decisions.commands.users",     # users create (admin UI accounts)
    "decisions.commands.models",    # models train/retrain/list/promote/rollback/drift
    "decisions.commands.events",    # events produce (send a file of events to Kafka)
)
