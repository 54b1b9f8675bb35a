"""Images (one row per distinct content, its id the FAISS id in every space) and the file
paths under which each was found."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row, bindparam, delete, func, insert, select, update
from sqlalchemy.orm import Session

from .models import Image, ImagePath, Vector

if TYPE_CHECKING:  # pragma: no cover
    from .connections import Connections


@dataclass
class ChunkWrite:
    """The rows one chunk of an ingest writes, all in one transaction."""

    new_images: list[dict[str, Any]] = field(default_factory=list)
    new_vectors: list[dict[str, Any]] = field(default_factory=list)
    new_paths: list[dict[str, Any]] = field(default_factory=list)
    # {"b_id": path row, "b_image_id", "b_size", "b_mtime"}: a known path now holds this image
    path_updates: list[dict[str, Any]] = field(default_factory=list)
    errors: list[tuple[int, str | None]] = field(default_factory=list)  # (image id, reason)
    adopted: list[dict[str, Any]] = field(default_factory=list)  # imported images read now
    left: list[int] = field(default_factory=list)  # images a path of this chunk moved away from


class ImageRepo:
    def __init__(self, db: Connections) -> None:
        self.db = db

    # ---- lookups ----------------------------------------------------------------------------
    def by_path(self, path: str) -> Image | None:
        with self.db.session() as s:
            row = s.scalar(select(ImagePath).where(ImagePath.path == os.path.abspath(path)))
            return s.get(Image, row.image_id) if row else None

    def by_sha(self, sha256: str) -> Image | None:
        with self.db.session() as s:
            return s.scalar(select(Image).where(Image.sha256 == sha256))

    def get(self, image_id: int) -> Image | None:
        with self.db.session() as s:
            return s.get(Image, image_id)

    def exists(self, image_id: int) -> bool:
        return self.db.read("SELECT 1 FROM images WHERE id = ?", (image_id,)) != []

    def paths(self) -> dict[int, str]:
        """image id -> its (first) path."""
        with self.db.session() as s:
            return dict(s.execute(select(Image.id, Image.path)).all())

    def paths_and_labels(self, ids: Sequence[int]) -> dict[int, tuple[str, str | None]]:
        """image id -> (path, expert label or None), on the hot path of a query."""
        marks = ",".join("?" * len(ids))
        rows = self.db.read(
            "SELECT i.id, i.path, l.label FROM images i LEFT JOIN labels l ON l.image_id = i.id "
            f"WHERE i.id IN ({marks})",
            list(ids),
        )
        return {i: (p, lab) for i, p, lab in rows}

    def export_rows(self) -> list[Row]:
        """(id, path, sha256) of every usable image, in id order."""
        with self.db.session() as s:
            q = select(Image.id, Image.path, Image.sha256).where(Image.status == "ok")
            return list(s.execute(q.order_by(Image.id)).all())

    def failures(self) -> list[tuple[str, str]]:
        with self.db.session() as s:
            q = select(Image.path, Image.error).where(Image.status == "failed")
            return [(p, e or "") for p, e in s.execute(q.order_by(Image.path))]

    def counts(self) -> dict[str, int]:
        """{"ok": usable images, "failed": failed files, "paths": file paths}."""
        with self.db.session() as s:
            by_status = dict(
                s.execute(select(Image.status, func.count()).group_by(Image.status)).all()
            )
            paths = s.scalar(select(func.count()).select_from(ImagePath)) or 0
        return {"ok": by_status.get("ok", 0), "failed": by_status.get("failed", 0), "paths": paths}

    def files(self) -> list[tuple[str, str | None, str]]:
        """(path, sha256, status) of every path, to compare with the disk."""
        q = select(ImagePath.path, Image.sha256, Image.status).join(
            Image, Image.id == ImagePath.image_id
        )
        with self.db.session() as s:
            return [tuple(r) for r in s.execute(q)]

    def to_embed(self, space_id: int) -> list[tuple[int, str]]:
        """(id, path) of the usable images that have no vector in a space yet, in id order.
        Images known only by imported vectors (no hash: the file was never read here, maybe
        it is not on this machine) are left out."""
        done = select(Vector.image_id).where(Vector.space_id == space_id)
        q = (
            select(Image.id, Image.path)
            .where(Image.status == "ok", Image.sha256.is_not(None), Image.id.not_in(done))
            .order_by(Image.id)
        )
        with self.db.session() as s:
            return [(i, p) for i, p in s.execute(q)]

    # ---- writes -----------------------------------------------------------------------------
    def mark_failed(self, s: Session, failed: Iterable[tuple[int, str]]) -> None:
        for image_id, reason in failed:
            img = s.get(Image, image_id)
            if img is not None:
                img.status, img.error = "failed", reason

    def merge_metadata(self, values: dict[int, dict[str, Any]]) -> int:
        """Add each image's metadata columns to what it has; returns the images updated."""
        with self.db.session() as s:
            for image_id, cols in values.items():
                img = s.get(Image, image_id)
                assert img is not None
                img.metadata_json = {**(img.metadata_json or {}), **cols}
            s.commit()
        return len(values)

    # ---- one ingest chunk -------------------------------------------------------------------
    def next_id(self) -> int:
        with self.db.session() as s:
            return (s.scalar(select(func.max(Image.id))) or 0) + 1

    def known_paths(self, s: Session, paths: Sequence[str]) -> dict[str, Row]:
        """path -> (path_id, path, image_id, size, mtime_ns, status, sha256) for known paths."""
        q = (
            select(
                ImagePath.id.label("path_id"),
                ImagePath.path,
                ImagePath.image_id,
                ImagePath.size,
                ImagePath.mtime_ns,
                Image.status,
                Image.sha256,
            )
            .join(Image, Image.id == ImagePath.image_id)
            .where(ImagePath.path.in_(list(paths)))
        )
        return {r.path: r for r in s.execute(q)}

    def by_shas(self, s: Session, shas: Sequence[str]) -> dict[str, Row]:
        """sha256 -> (id, sha256, status, path) of the images with these contents."""
        q = select(Image.id, Image.sha256, Image.status, Image.path).where(Image.sha256.in_(shas))
        return {r.sha256: r for r in s.execute(q)}

    def write_chunk(self, s: Session, w: ChunkWrite) -> None:
        """Write a chunk's rows in session ``s`` (the caller commits)."""
        for image_id, error in w.errors:
            s.execute(update(Image).where(Image.id == image_id).values(error=error))
        for values in w.adopted:
            fields = {k: v for k, v in values.items() if k != "id"}
            s.execute(update(Image).where(Image.id == values["id"]).values(**fields))
        if w.new_images:
            s.execute(insert(Image), w.new_images)
        if w.new_vectors:
            s.execute(insert(Vector), w.new_vectors)
        if w.new_paths:
            s.execute(insert(ImagePath), w.new_paths)
        if w.path_updates:  # after the inserts: a path may now point at an image made above
            tbl = ImagePath.__table__
            stmt = (
                tbl.update()
                .where(tbl.c.id == bindparam("b_id"))
                .values(
                    image_id=bindparam("b_image_id"),
                    size=bindparam("b_size"),
                    mtime_ns=bindparam("b_mtime"),
                )
            )
            s.connection().execute(stmt, w.path_updates)
        for image_id in w.left:
            self._drop_if_pathless(s, image_id)

    def _drop_if_pathless(self, s: Session, image_id: int) -> None:
        """An image whose last path now holds other bytes is gone (vectors and labels too)."""
        q = select(ImagePath.path).where(ImagePath.image_id == image_id).limit(1)
        remaining = s.scalar(q)
        if remaining is None:
            s.execute(delete(Image).where(Image.id == image_id))  # ON DELETE CASCADE
        else:
            s.execute(update(Image).where(Image.id == image_id).values(path=remaining))
