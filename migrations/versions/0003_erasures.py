"""erasure tombstones

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('erasures',
    sa.Column('user_id', sa.String(length=200), nullable=False),
    sa.Column('erased_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('user_id')
    )
    op.create_index(op.f('ix_erasures_erased_at'), 'erasures', ['erased_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_erasures_erased_at'), table_name='erasures')
    op.drop_table('erasures')
