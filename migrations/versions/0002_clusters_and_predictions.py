"""clusters and predictions

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 04:32:39.939628
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cluster_assignments",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("cluster", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "image_id"),
    )
    with op.batch_alter_table("cluster_assignments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_cluster_assignments_image_id"), ["image_id"], unique=False
        )

    op.create_table(
        "predictions",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=128), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("second_label", sa.String(length=128), nullable=True),
        sa.Column("margin", sa.Float(), nullable=False),
        sa.Column("reached", sa.Boolean(), nullable=False),
        sa.Column("distribution", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "image_id"),
    )
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_predictions_image_id"), ["image_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_predictions_image_id"))

    op.drop_table("predictions")
    with op.batch_alter_table("cluster_assignments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cluster_assignments_image_id"))

    op.drop_table("cluster_assignments")
