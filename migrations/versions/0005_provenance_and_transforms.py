"""how each expert label was chosen (labels.chosen, and label_events.old_chosen and
new_chosen for undo), and a vector transform per space
(space_transforms: mean-centring or PCA whitening applied before the cosine)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 09:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("labels") as batch_op:
        batch_op.add_column(sa.Column("chosen", sa.String(length=16), nullable=True))
    # labels from before: folder labels came from the folders, `labels set` ones (source cli)
    # from a person looking at the image, the rest were imported as they are
    op.execute(
        "UPDATE labels SET chosen = CASE source WHEN 'folder' THEN 'folder' "
        "WHEN 'cli' THEN 'review' ELSE 'import' END"
    )
    with op.batch_alter_table("label_events") as batch_op:
        batch_op.add_column(sa.Column("old_chosen", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("new_chosen", sa.String(length=16), nullable=True))
    # the events by the same rule, so that undoing a batch from before gives back what the
    # labels above were given (and a label's last event agrees with it)
    for side in ("old", "new"):
        op.execute(
            f"UPDATE label_events SET {side}_chosen = CASE {side}_source WHEN 'folder' "
            f"THEN 'folder' WHEN 'cli' THEN 'review' ELSE 'import' END "
            f"WHERE {side}_label IS NOT NULL"
        )
    op.create_table(
        "space_transforms",
        sa.Column("space_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("dim_in", sa.Integer(), nullable=False),
        sa.Column("dim_out", sa.Integer(), nullable=False),
        sa.Column("mean", sa.LargeBinary(), nullable=False),
        sa.Column("components", sa.LargeBinary(), nullable=True),
        sa.Column("fitted_on", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["space_id"], ["spaces.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("space_id"),
    )


def downgrade() -> None:
    op.drop_table("space_transforms")
    with op.batch_alter_table("label_events") as batch_op:
        batch_op.drop_column("new_chosen")
        batch_op.drop_column("old_chosen")
    with op.batch_alter_table("labels") as batch_op:
        batch_op.drop_column("chosen")
