"""SQLAlchemy 2.0 typed ORM models. Schema changes go through Alembic migrations only."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class Image(Base):
    """One distinct image content (sha256). Its id is also its FAISS id in every space."""

    __tablename__ = "images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # NULL only for files that could not be read at all (no bytes, no hash).
    sha256: Mapped[str | None] = mapped_column(String(64), unique=True)
    path: Mapped[str] = mapped_column(Text)  # first path seen; all paths are in image_paths
    size: Mapped[int | None] = mapped_column(Integer)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    mode: Mapped[str | None] = mapped_column(String(16))
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default="ok")  # ok | failed
    error: Mapped[str | None] = mapped_column(Text)
    metadata_json: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # sha256 of the decoded pixels (mode, size, bytes): a file re-saved with the same pixels
    # keeps its expert label silently; NULL for images read before it was recorded
    pixels_sha256: Mapped[str | None] = mapped_column(String(64))

    paths: Mapped[list[ImagePath]] = relationship(
        back_populates="image", cascade="all, delete-orphan"
    )

    # AUTOINCREMENT: an id is never given again after its image is deleted (it is the FAISS id
    # in every space, and an index file may still hold the old vector under it)
    __table_args__ = (Index("ix_images_status", "status"), {"sqlite_autoincrement": True})


class ImagePath(Base):
    """A file path under which an image was found (identical bytes under two paths: two rows)."""

    __tablename__ = "image_paths"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    # size + mtime let a re-run skip unchanged files without reading them.
    size: Mapped[int | None] = mapped_column(Integer)
    mtime_ns: Mapped[int | None] = mapped_column(Integer)
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # why the file cannot be read now (missing, empty, unreadable...): its image, vectors and
    # labels are kept, and the next ingest tries it again
    problem: Mapped[str | None] = mapped_column(Text)
    problem_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    image: Mapped[Image] = relationship(back_populates="paths")


class Space(Base):
    """An embedding space: one model (or descriptor), one layer, one set of weights, one dim."""

    __tablename__ = "spaces"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    model: Mapped[str] = mapped_column(String(64))
    layer: Mapped[str | None] = mapped_column(String(64))
    dim: Mapped[int] = mapped_column(Integer)
    preprocessing: Mapped[str] = mapped_column(Text)
    # the CNN forward pass's numeric precision (PRECISIONS); descriptors: fp32
    precision: Mapped[str] = mapped_column(String(8), default="fp32", server_default="fp32")
    weights: Mapped[str] = mapped_column(Text)  # human-readable description, e.g. IMAGENET1K_V1
    weights_random: Mapped[bool] = mapped_column(Boolean, default=False)
    weights_sha256: Mapped[str | None] = mapped_column(String(64))
    index_type: Mapped[str | None] = mapped_column(String(128))  # the factory of the built index
    # user's choices (NULL: automatic, see vecstore.search.choice.choose_index)
    index_factory: Mapped[str | None] = mapped_column(String(128))
    memory_budget: Mapped[int | None] = mapped_column(BigInteger)
    # what the last build made: factory, search parameters, recall@10 measured on a sample...
    index_stats: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class VectorDeletions(Base):
    """How many vectors were ever deleted from a space, counted by the trigger
    ``vectors_deleted`` (migration 0006; no row: none). With the largest rowid of vectors,
    it tells a reader whether a space's rows were only added since it last looked. No
    foreign key: the trigger also counts the vectors a deleted space takes with it."""

    __tablename__ = "vector_deletions"

    space_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    deleted: Mapped[int] = mapped_column(Integer)


class SpaceTransform(Base):
    """How a space's vectors are transformed before the cosine (queries, clustering,
    propagation alike): mean-centred (``kind`` "center") or PCA-whitened to ``dim_out``
    dimensions ("pca"); ``mean`` (dim_in float32) and ``components`` (dim_out x dim_in
    float32, whitening folded in) as fitted on ``fitted_on`` vectors. No row: raw cosine."""

    __tablename__ = "space_transforms"

    space_id: Mapped[int] = mapped_column(
        ForeignKey("spaces.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    dim_in: Mapped[int] = mapped_column(Integer)
    dim_out: Mapped[int] = mapped_column(Integer)
    mean: Mapped[bytes] = mapped_column(LargeBinary)
    components: Mapped[bytes | None] = mapped_column(LargeBinary)
    fitted_on: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Vector(Base):
    """A float32 vector of one image in one space (raw, not normalised)."""

    __tablename__ = "vectors"

    # Primary key (space_id, image_id): all vectors of a space in id order is one range scan.
    space_id: Mapped[int] = mapped_column(
        ForeignKey("spaces.id", ondelete="CASCADE"), primary_key=True
    )
    image_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class Label(Base):
    """An expert label. Pseudo-labels never land here."""

    __tablename__ = "labels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(Text)  # folder | csv:<file> | cli | review | ...
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # set when the label was carried over to new file content: "content changed since labeled"
    review_reason: Mapped[str | None] = mapped_column(Text)
    batch_id: Mapped[int | None] = mapped_column(
        ForeignKey("label_batches.id", ondelete="SET NULL")
    )
    # how the image came to be labeled: folder | import | suggested | review (CHOSEN_HOW);
    # only the labels not picked by vecstore (folder, import) estimate accuracy without bias
    chosen: Mapped[str | None] = mapped_column(String(16))

    __table_args__ = (UniqueConstraint("image_id", name="uq_labels_image"),)


class LabelBatch(Base):
    """One change of the expert labels (an import, a set, a remove, labels carried over by an
    ingest, an undo...): who made it, when, from what. Undoable as a whole."""

    __tablename__ = "label_batches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # import | set | remove | folder | carry | undo
    who: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    undone_by: Mapped[int | None] = mapped_column(Integer)  # the undo batch, once undone

    __table_args__ = ({"sqlite_autoincrement": True},)


class LabelEvent(Base):
    """One image's label before and after a batch (None: no label)."""

    __tablename__ = "label_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[int] = mapped_column(
        ForeignKey("label_batches.id", ondelete="CASCADE"), index=True
    )
    image_id: Mapped[int] = mapped_column(Integer, index=True)  # may outlive its image
    path: Mapped[str | None] = mapped_column(Text)
    old_label: Mapped[str | None] = mapped_column(String(128))
    old_source: Mapped[str | None] = mapped_column(Text)
    new_label: Mapped[str | None] = mapped_column(String(128))
    new_source: Mapped[str | None] = mapped_column(Text)
    old_review: Mapped[str | None] = mapped_column(Text)  # the labels' review reasons
    new_review: Mapped[str | None] = mapped_column(Text)
    # how the image came to be labeled (labels.chosen) before and after: undo restores it
    old_chosen: Mapped[str | None] = mapped_column(String(16))
    new_chosen: Mapped[str | None] = mapped_column(String(16))


class EmbedFailure(Base):
    """An image that one space could not embed (the file gone or unreadable at that moment):
    the image stays usable in its other spaces and is tried again by the next embed."""

    __tablename__ = "embed_failures"

    space_id: Mapped[int] = mapped_column(
        ForeignKey("spaces.id", ondelete="CASCADE"), primary_key=True
    )
    image_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Run(Base):
    """One unit of work (ingest, embed, cluster, propagate) with its parameters and results."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    space: Mapped[str | None] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    code_version: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), default="running")  # running | done | failed
    seconds: Mapped[float | None] = mapped_column(Float)


class ClusterAssignment(Base):
    """The cluster of each image in one clustering run."""

    __tablename__ = "cluster_assignments"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    image_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    cluster: Mapped[int] = mapped_column(Integer)


class Prediction(Base):
    """A pseudo-label of one image from one propagation run (expert labels stay in `labels`)."""

    __tablename__ = "predictions"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    image_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    label: Mapped[str | None] = mapped_column(String(128))  # None: no expert label reaches it
    confidence: Mapped[float] = mapped_column(Float)  # 1 - entropy / log(C)
    second_label: Mapped[str | None] = mapped_column(String(128))
    margin: Mapped[float] = mapped_column(Float)  # p(best) - p(second)
    # reached by the diffusion from an expert label (False: out-of-sample vote of neighbours)
    reached: Mapped[bool] = mapped_column(Boolean)
    # float32 class probabilities in the order of the run's stats["classes"]
    distribution: Mapped[bytes] = mapped_column(LargeBinary)
