"""index settings per space: factory override, memory budget, what was built and its recall

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("spaces", schema=None) as batch_op:
        batch_op.add_column(sa.Column("index_factory", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("memory_budget", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("index_stats", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("spaces", schema=None) as batch_op:
        batch_op.drop_column("index_stats")
        batch_op.drop_column("memory_budget")
        batch_op.drop_column("index_factory")
