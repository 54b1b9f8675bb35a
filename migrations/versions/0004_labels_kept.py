"""image ids never reused, file problems kept on their paths, label batches and events,
embed failures per space, pixel hashes, review reasons on labels

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 03:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # recreated with AUTOINCREMENT (the migration runs with foreign keys off: see
    # vecstore.db.migrate, else dropping the old table would delete what points at it)
    with op.batch_alter_table(
        "images", recreate="always", table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.add_column(sa.Column("pixels_sha256", sa.String(length=64), nullable=True))
    with op.batch_alter_table("image_paths") as batch_op:
        batch_op.add_column(sa.Column("problem", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("problem_since", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "label_batches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("who", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("undone_by", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "label_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("old_label", sa.String(length=128), nullable=True),
        sa.Column("old_source", sa.Text(), nullable=True),
        sa.Column("new_label", sa.String(length=128), nullable=True),
        sa.Column("new_source", sa.Text(), nullable=True),
        sa.Column("old_review", sa.Text(), nullable=True),
        sa.Column("new_review", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["batch_id"], ["label_batches.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("label_events") as batch_op:
        batch_op.create_index(batch_op.f("ix_label_events_batch_id"), ["batch_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_label_events_image_id"), ["image_id"], unique=False)
    with op.batch_alter_table("labels", recreate="always") as batch_op:
        batch_op.add_column(sa.Column("review_reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("batch_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            "fk_labels_batch_id", "label_batches", ["batch_id"], ["id"], ondelete="SET NULL"
        )
    op.create_table(
        "embed_failures",
        sa.Column("space_id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["space_id"], ["spaces.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("space_id", "image_id"),
    )
    # embedding failures used to mark the whole image failed ("<space>: <reason>"): such an
    # image decoded fine when it was registered; it is usable, and its space tries it again
    op.execute(
        "UPDATE images SET status = 'ok', error = NULL WHERE status = 'failed' "
        "AND sha256 IS NOT NULL AND width IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_table("embed_failures")
    with op.batch_alter_table("labels", recreate="always") as batch_op:
        batch_op.drop_constraint("fk_labels_batch_id", type_="foreignkey")
        batch_op.drop_column("batch_id")
        batch_op.drop_column("review_reason")
    op.drop_table("label_events")
    op.drop_table("label_batches")
    with op.batch_alter_table("image_paths") as batch_op:
        batch_op.drop_column("problem_since")
        batch_op.drop_column("problem")
    with op.batch_alter_table("images", recreate="always") as batch_op:
        batch_op.drop_column("pixels_sha256")
