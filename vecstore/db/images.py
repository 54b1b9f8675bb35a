"""Images (one row per distinct content, its id the FAISS id in every space) and the file
paths under which each was found."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Row, Select, and_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from ..errors import BadInput
from ..params import matches_where
from .connections import in_chunks
from .labels import Carry
from .models import EmbedFailure, Image, ImagePath, Space, Vector, utcnow

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
    revived: list[dict[str, Any]] = field(default_factory=list)  # failed images now readable
    # (path row, reason): a known file unreadable now; its image, vectors and labels are kept
    problems: list[tuple[int, str]] = field(default_factory=list)
    carry: list[Carry] = field(default_factory=list)  # labels that follow their path
    left: list[int] = field(default_factory=list)  # images a path of this chunk moved away from
    metadata: dict[int, dict[str, Any]] = field(default_factory=dict)  # read from the files


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

    def export_rows(self, after: int = 0, limit: int | None = None) -> list[Row]:
        """(id, path, sha256) of every usable image (with an id above ``after``; the first
        ``limit`` of them when given: a page), in id order."""
        with self.db.session() as s:
            q = select(Image.id, Image.path, Image.sha256)
            q = q.where(Image.status == "ok", Image.id > after)
            return list(s.execute(q.order_by(Image.id).limit(limit)).all())

    def usable_up_to(self, image_id: int) -> tuple[int, int, int]:
        """(how many, sum of their ids, how many never read) of the usable images with an id
        up to ``image_id``: compared with the same figures taken earlier, it tells whether one
        went, came back, or was read for the first time (an image of import-vectors adopted
        by an ingest: same id, now with its content hash) since."""
        (n, total, unread), *_ = self.db.read(
            "SELECT COUNT(*), COALESCE(SUM(id), 0), COUNT(*) - COUNT(sha256) FROM images "
            "WHERE status = 'ok' AND id <= ?",
            (image_id,),
        )
        return n, total, unread

    def failures(self) -> list[tuple[str, str]]:
        """(path, reason) of the files that failed, and of the images a space could not
        embed (tried again by the next ingest or embed), sorted by path."""
        failed = select(Image.path, Image.error).where(Image.status == "failed")
        embed = (
            select(Image.path, Space.name, EmbedFailure.reason)
            .join(Image, Image.id == EmbedFailure.image_id)
            .join(Space, Space.id == EmbedFailure.space_id)
        )
        with self.db.session() as s:
            rows = [(p, e or "") for p, e in s.execute(failed)]
            rows += [
                (p, f"{space}: {why} (tried again next time)") for p, space, why in s.execute(embed)
            ]
        return sorted(rows)

    def existing(self, ids: Sequence[int]) -> set[int]:
        """Those of ``ids`` that are images of the store."""
        out: set[int] = set()
        for part in in_chunks(ids):
            marks = ",".join("?" * len(part))
            out.update(
                i for (i,) in self.db.read(f"SELECT id FROM images WHERE id IN ({marks})", part)
            )
        return out

    def paths_under(self, folder: str) -> set[str]:
        """The known paths inside ``folder`` (an absolute path), at any depth."""
        prefix = folder.rstrip(os.sep) + os.sep
        rows = self.db.read(
            "SELECT path FROM image_paths WHERE substr(path, 1, ?) = ?", (len(prefix), prefix)
        )
        return {p for (p,) in rows}

    def owners(self, paths: Iterable[str]) -> dict[str, int]:
        """path -> image id, for those of ``paths`` the store knows."""
        return path_owners(self.db.read, paths)

    def left_without_paths(self, owners: dict[str, int]) -> set[int]:
        """The images that would have no path left once the paths of ``owners`` are gone."""
        ids = set(owners.values())
        with self.db.session() as s:
            rows = s.execute(
                select(ImagePath.image_id, ImagePath.path).where(ImagePath.image_id.in_(ids))
            )
            kept = {iid for iid, path in rows if path not in owners}
        return ids - kept

    def forget(self, paths: Iterable[str]) -> None:
        """Delete these paths, and the images left with none (with their vectors, labels and
        run outputs: ON DELETE CASCADE), in one transaction."""
        with self.db.session() as s:
            owners = set()
            for part in in_chunks(paths):
                owners.update(s.scalars(select(ImagePath.image_id).where(ImagePath.path.in_(part))))
                s.execute(delete(ImagePath).where(ImagePath.path.in_(part)))
            self.drop_pathless(s, sorted(owners))
            s.commit()

    def unavailable(self) -> list[tuple[str, str]]:
        """(path, problem) of the known files that could not be read at the last ingest."""
        q = select(ImagePath.path, ImagePath.problem).where(ImagePath.problem.is_not(None))
        with self.db.session() as s:
            return [(p, why) for p, why in s.execute(q.order_by(ImagePath.path))]

    def counts(self) -> dict[str, int]:
        """{"ok": usable images, "failed": failed files, "paths": file paths}."""
        with self.db.session() as s:
            by_status = dict(
                s.execute(select(Image.status, func.count()).group_by(Image.status)).all()
            )
            paths = s.scalar(select(func.count()).select_from(ImagePath)) or 0
        return {"ok": by_status.get("ok", 0), "failed": by_status.get("failed", 0), "paths": paths}

    def metadata_columns(self) -> list[tuple[str, int, int]]:
        """(column, usable images that have it, distinct values) of the metadata columns."""
        return [
            (str(k), int(n), int(d))
            for k, n, d in self.db.read(
                "SELECT j.key, COUNT(*), COUNT(DISTINCT j.value) FROM images, "
                "json_each(images.metadata_json) AS j WHERE images.status = 'ok' "
                "AND images.metadata_json IS NOT NULL GROUP BY j.key ORDER BY j.key"
            )
        ]

    def metadata_names(self, asked: Iterable[str] = (), *, hint: str = "") -> list[str]:
        """The store's metadata column names, in order; a BadInput naming the first of
        ``asked`` the store has not, with the ones it has (and ``hint``)."""
        known = [name for name, _, _ in self.metadata_columns()]
        unknown = [a for a in asked if a not in known]
        if unknown:
            raise BadInput(
                f"no metadata column {unknown[0]!r} in this store; it has: "
                f"{', '.join(known) or 'none'}{hint}"
            )
        return known

    def ids_where(self, where: Sequence[tuple[str, str]]) -> np.ndarray:
        """The usable images whose metadata has every (column, value) (params.matches_where),
        sorted."""
        sql = "SELECT id, metadata_json FROM images WHERE status = 'ok'"
        params: list[str] = []
        for column, _ in where:  # narrowed in SQL, compared exactly below
            sql += " AND json_extract(metadata_json, ?) IS NOT NULL"
            params.append(json_path(column))
        rows = self.db.read(sql, params)
        keep = [i for i, m in rows if matches_where(json.loads(m), where)]
        return np.asarray(sorted(keep), dtype=np.int64)

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
    def metadata_values(self, column: str) -> dict[int, Any]:
        """image id -> its value of one metadata column, for the images that have one."""
        q = select(Image.id, Image.metadata_json).where(Image.metadata_json.is_not(None))
        with self.db.session() as s:
            return {i: m[column] for i, m in s.execute(q) if m.get(column) not in (None, "")}

    def metadata_of(self, ids: Sequence[int] | None = None) -> dict[int, dict[str, Any]]:
        """image id -> its metadata columns, for the images (all, or ``ids``) that have some."""
        q = select(Image.id, Image.metadata_json).where(Image.metadata_json.is_not(None))
        with self.db.session() as s:
            if ids is None:
                return {iid: meta for iid, meta in s.execute(q) if meta}
            out = {}
            for part in in_chunks(list(ids)):
                out.update({i: m for i, m in s.execute(q.where(Image.id.in_(part))) if m})
            return out

    def merge_metadata(self, values: dict[int, dict[str, Any]]) -> int:
        """Add each image's metadata columns to what it has; returns the images updated."""
        with self.db.session() as s:
            _merge_metadata(s, values)
            s.commit()
        return len(values)

    # ---- one ingest chunk -------------------------------------------------------------------
    def next_id(self) -> int:
        """The first id never given to an image: past the largest id SQLite's AUTOINCREMENT
        has handed out (sqlite_sequence), even if that image has been deleted since."""
        seq = self.db.read("SELECT seq FROM sqlite_sequence WHERE name = 'images'")
        largest = self.db.read("SELECT max(id) FROM images")[0][0]
        return max(seq[0][0] if seq else 0, largest or 0) + 1

    def deleted(self, ids: Iterable[int]) -> set[int]:
        """Of ``ids``, those once given to an image that has been deleted since (AUTOINCREMENT
        never gives them again); not the ids this database never gave."""
        ids, below = [int(i) for i in ids], self.next_id()
        with self.db.session() as s:
            present = {
                i
                for part in in_chunks(ids)
                for i in s.scalars(select(Image.id).where(Image.id.in_(part)))
            }
        return {i for i in ids if i < below and i not in present}

    def known_paths(self, s: Session, paths: Sequence[str]) -> dict[str, Row]:
        """path -> (path_id, path, image_id, size, mtime_ns, problem, status, sha256,
        pixels_sha256) for the known paths."""
        return {r.path: r for r in s.execute(self._known().where(ImagePath.path.in_(paths)))}

    def known_paths_starting(self, s: Session, prefixes: Sequence[str]) -> dict[str, Row]:
        """known_paths of the paths that start with one of ``prefixes`` (each ending in an
        ASCII character below DEL: a range of the path index, not a scan)."""
        if not prefixes:
            return {}
        ranges = [
            and_(ImagePath.path > p, ImagePath.path < p[:-1] + chr(ord(p[-1]) + 1))
            for p in prefixes
        ]
        return {r.path: r for r in s.execute(self._known().where(or_(*ranges)))}

    def _known(self) -> Select:
        return select(
            ImagePath.id.label("path_id"),
            ImagePath.path,
            ImagePath.image_id,
            ImagePath.size,
            ImagePath.mtime_ns,
            ImagePath.problem,
            Image.status,
            Image.sha256,
            Image.pixels_sha256,
        ).join(Image, Image.id == ImagePath.image_id)

    def by_shas(self, s: Session, shas: Sequence[str]) -> dict[str, Row]:
        """sha256 -> (id, sha256, status, path) of the images with these contents."""
        q = select(Image.id, Image.sha256, Image.status, Image.path).where(Image.sha256.in_(shas))
        return {r.sha256: r for r in s.execute(q)}

    def write_chunk(self, s: Session, w: ChunkWrite) -> None:
        """Write a chunk's rows in session ``s`` (the caller carries the labels of changed
        paths, then drops the images left without a path: ``drop_pathless``)."""
        for image_id, error in w.errors:
            s.execute(update(Image).where(Image.id == image_id).values(error=error))
        for values in [*w.adopted, *w.revived]:
            fields = {k: v for k, v in values.items() if k != "id"}
            s.execute(update(Image).where(Image.id == values["id"]).values(**fields))
        now = utcnow()
        for path_id, reason in w.problems:
            s.execute(
                update(ImagePath)
                .where(ImagePath.id == path_id, ImagePath.problem.is_(None))
                .values(problem_since=now)
            )
            s.execute(update(ImagePath).where(ImagePath.id == path_id).values(problem=reason))
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
                    problem=None,
                    problem_since=None,
                )
            )
            s.connection().execute(stmt, w.path_updates)
        _merge_metadata(s, w.metadata)

    def drop_pathless(self, s: Session, image_ids: Iterable[int]) -> None:
        for image_id in image_ids:
            self._drop_if_pathless(s, image_id)

    def _drop_if_pathless(self, s: Session, image_id: int) -> None:
        """An image whose last path now holds other bytes is gone, with its vectors (its
        label went to the path's new image first: LabelRepo.carry)."""
        q = select(ImagePath.path).where(ImagePath.image_id == image_id).limit(1)
        remaining = s.scalar(q)
        if remaining is None:
            s.execute(delete(Image).where(Image.id == image_id))  # ON DELETE CASCADE
        else:
            s.execute(update(Image).where(Image.id == image_id).values(path=remaining))


def path_owners(read: Callable[[str, Sequence[Any]], list], paths: Iterable[str]) -> dict[str, int]:
    """path -> image id of the known ones among ``paths``; ``read(sql, params)`` runs a query
    on whichever connection the caller holds (one in a transaction, say)."""
    out: dict[str, int] = {}
    for part in in_chunks(paths):
        marks = ",".join("?" * len(part))
        out.update(read(f"SELECT path, image_id FROM image_paths WHERE path IN ({marks})", part))
    return out


def _merge_metadata(s: Session, values: dict[int, dict[str, Any]]) -> None:
    for image_id, cols in values.items():
        img = s.get(Image, image_id)
        assert img is not None
        img.metadata_json = {**(img.metadata_json or {}), **cols}


def json_path(key: str) -> str:
    """SQLite's JSON path of one top-level key, quoted (a key may hold dots or spaces)."""
    return '$."' + key.replace('"', '""') + '"'
