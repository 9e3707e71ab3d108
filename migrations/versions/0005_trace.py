"""decisions.trace_id: the OpenTelemetry trace of a traced decision (#21)

NULL for a decision taken with tracing off or on an event that was not sampled.

Revision ID: 0005_trace
Revises: 0004
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005_trace'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # nullable, no default: PostgreSQL adds the column without rewriting the table
    op.add_column('decisions', sa.Column('trace_id', sa.String(length=32), nullable=True))


def downgrade() -> None:
    op.drop_column('decisions', 'trace_id')
