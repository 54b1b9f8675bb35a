"""the numeric precision a CNN space's vectors were computed in (fp32 for every space before)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 17:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("spaces", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("precision", sa.String(length=8), nullable=False, server_default="fp32")
        )


def downgrade() -> None:
    with op.batch_alter_table("spaces", schema=None) as batch_op:
        batch_op.drop_column("precision")
