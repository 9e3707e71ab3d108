"""indexes for customer cache invalidation, consent list and archive reads

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 14:29:24.496210
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index('ix_customers_no_consent', 'customers', ['user_id'], unique=False, postgresql_where=sa.text('NOT consent'))
    op.create_index(op.f('ix_customers_updated_at'), 'customers', ['updated_at'], unique=False)
    op.create_index('ix_events_ts', 'events', ['ts'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_events_ts', table_name='events')
    op.drop_index(op.f('ix_customers_updated_at'), table_name='customers')
    op.drop_index('ix_customers_no_consent', table_name='customers', postgresql_where=sa.text('NOT consent'))
