"""Vectors: one float32 blob per image and space. Whole spaces load straight from the DB-API
cursor into one preallocated array, and imports write through executemany, so a million rows
move in seconds."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from ..errors import VecstoreError
from .connections import in_chunks
from .images import path_owners
from .models import EmbedFailure, Vector, utcnow

if TYPE_CHECKING:  # pragma: no cover
    from .connections import Connections
    from .models import Space

FETCH_ROWS = 8192


def from_blobs(space: Space, blobs: Sequence[bytes]) -> np.ndarray:
    """(len(blobs), dim) float32 from the stored blobs, each checked to be dim float32 long
    (a longer and a shorter one would otherwise cancel out and shift the rows between them)."""
    width = space.dim * 4
    if any(len(b) != width for b in blobs):
        raise VecstoreError(
            f"space {space.name!r} holds vectors of the wrong length "
            f"(expected {space.dim} float32); run `vecstore check`"
        )
    if not blobs:
        return np.zeros((0, space.dim), np.float32)
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), space.dim)


class VectorsMark(NamedTuple):
    """See VectorRepo.mark."""

    last_rowid: int
    deleted: int


@dataclass
class ImportCounts:
    added: int = 0  # new images
    reused: int = 0  # images already known by their path, given a vector in the space
    skipped: int = 0  # images that already had a vector in the space


class VectorRepo:
    def __init__(self, db: Connections) -> None:
        self.db = db

    def ids(self, space: Space) -> np.ndarray:
        """The image ids that have a vector in a space, sorted."""
        with self.db.raw() as raw:
            cur = raw.execute(
                "SELECT image_id FROM vectors WHERE space_id = ? ORDER BY image_id", (space.id,)
            )
            return np.fromiter((r[0] for r in cur), dtype=np.int64)

    def mark(self, space: Space) -> VectorsMark:
        """Where the vectors table stands for a space, read in O(1): the largest rowid of the
        table and the count of vectors ever deleted from the space (a trigger keeps it).
        Vectors are inserted (a new rowid past the largest) and deleted, never updated: with
        the same count of deletions, what changed since an earlier mark is exactly the
        space's rows past its rowid (``added_since``). A deleted largest rowid can be given
        again, but that deletion moves the count."""
        last, deleted = self.db.read(
            "SELECT (SELECT MAX(rowid) FROM vectors), "
            "(SELECT deleted FROM vector_deletions WHERE space_id = ?)",
            (space.id,),
        )[0]
        return VectorsMark(last or 0, deleted or 0)

    def added_since(self, space: Space, rowid: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of the space's rows past ``rowid``, in id order: one range of the
        table's rowids (``+space_id`` keeps SQLite off the space's index, which would
        visit every vector of the space)."""
        rows = self.db.read(
            "SELECT image_id, vector FROM vectors WHERE rowid > ? AND +space_id = ?",
            (rowid, space.id),
        )
        rows.sort()
        ids = np.asarray([r[0] for r in rows], dtype=np.int64)
        return ids, from_blobs(space, [r[1] for r in rows])

    def one(self, space: Space, image_id: int) -> np.ndarray | None:
        """The vector of one image (1 x dim), or None; on the query's hot path."""
        rows = self.db.read(
            "SELECT vector FROM vectors WHERE space_id = ? AND image_id = ?", (space.id, image_id)
        )
        return from_blobs(space, [rows[0][0]]) if rows else None

    def get(
        self, space: Space, ids: Sequence[int] | np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of a space, all of them or the given ids, in id order."""
        if ids is None:
            return self._all(space)
        q = select(Vector.image_id, Vector.vector).where(Vector.space_id == space.id)
        wanted = [int(i) for i in ids]
        rows = []
        with self.db.session() as s:
            for chunk in in_chunks(wanted):
                rows.extend(s.execute(q.where(Vector.image_id.in_(chunk))).all())
        rows.sort()
        out_ids = np.asarray([r[0] for r in rows], dtype=np.int64)
        return out_ids, from_blobs(space, [r[1] for r in rows])

    def _all(self, space: Space) -> tuple[np.ndarray, np.ndarray]:
        """All vectors of a space, straight from the DB-API cursor into one preallocated array
        (no ORM rows, no list of blobs: 1M x 512 loads in seconds with one copy in memory)."""
        dim = space.dim
        with self.db.raw() as raw:
            count = "SELECT count(*) FROM vectors WHERE space_id = ?"
            n = raw.execute(count, (space.id,)).fetchone()[0]
            ids, x = np.empty(n, np.int64), np.empty((n, dim), np.float32)
            filled = 0
            cur = raw.execute(
                "SELECT image_id, vector FROM vectors WHERE space_id = ? ORDER BY image_id",
                (space.id,),
            )
            while rows := cur.fetchmany(FETCH_ROWS):
                if filled + len(rows) > len(ids):  # a writer added rows since the count
                    grow = max(len(rows), len(ids) // 4)
                    ids = np.resize(ids, len(ids) + grow)
                    x = np.resize(x, (len(x) + grow, dim))
                ids[filled : filled + len(rows)] = [r[0] for r in rows]
                x[filled : filled + len(rows)] = from_blobs(space, [r[1] for r in rows])
                filled += len(rows)
        return ids[:filled], x[:filled]

    def add(self, s: Session, space_id: int, ids: Sequence[int], vectors: np.ndarray) -> None:
        """Insert one batch of vectors in session ``s`` (the caller commits)."""
        if len(ids):
            vecs = np.asarray(vectors, dtype=np.float32)
            rows = [
                {"image_id": i, "space_id": space_id, "vector": v.tobytes()}
                for i, v in zip(ids, vecs)
            ]
            s.execute(insert(Vector), rows)
            s.execute(
                delete(EmbedFailure).where(
                    EmbedFailure.space_id == space_id, EmbedFailure.image_id.in_(list(ids))
                )
            )

    def having(self, s: Session, space_id: int, ids: Sequence[int]) -> set[int]:
        """Those of ``ids`` that have a vector in a space, as session ``s`` sees them."""
        s.flush()  # what the session holds pending counts, as an ORM query's autoflush would
        conn = s.connection()
        return _with_vector(
            lambda sql, p: conn.exec_driver_sql(sql, tuple(p)).fetchall(), space_id, list(ids)
        )

    def record_failures(self, s: Session, space_id: int, failed: Sequence[tuple[int, str]]) -> None:
        """The images a space could not embed this time, and why (the next embed tries
        them again; the images stay usable everywhere else)."""
        now = utcnow()
        for image_id, reason in failed:
            s.merge(EmbedFailure(space_id=space_id, image_id=image_id, reason=reason, at=now))

    def count(self, space: Space) -> int:
        with self.db.session() as s:
            q = select(func.count()).select_from(Vector).where(Vector.space_id == space.id)
            return s.scalar(q) or 0

    def wrong_length(self, space: Space) -> int:
        """How many vectors of a space are not ``dim`` float32 long."""
        with self.db.session() as s:
            q = (
                select(func.count())
                .select_from(Vector)
                .where(Vector.space_id == space.id, func.length(Vector.vector) != space.dim * 4)
            )
            return s.scalar(q) or 0

    def total_bytes(self) -> int:
        with self.db.session() as s:
            return s.scalar(select(func.coalesce(func.sum(func.length(Vector.vector)), 0))) or 0

    def import_rows(
        self, space_id: int, paths: list[str], x: np.ndarray, next_id: int
    ) -> tuple[ImportCounts, int]:
        """One chunk of an import in one transaction: each path becomes an image (or finds the
        one it already is) with its vector in the space; an image that already has one is
        skipped. Returns the counts and the next free image id."""
        counts = ImportCounts()
        with self.db.raw() as raw:
            known = path_owners(lambda sql, p: raw.execute(sql, p).fetchall(), paths)
            have = _with_vector(
                lambda sql, p: raw.execute(sql, p).fetchall(), space_id, list(known.values())
            )
            now = utcnow().strftime("%Y-%m-%d %H:%M:%S.%f")  # SQLAlchemy's SQLite DATETIME format
            images, path_rows, vec_rows = [], [], []
            for p, v in zip(paths, x):
                iid = known.get(p)
                if iid is None:
                    iid, next_id = next_id, next_id + 1
                    images.append((iid, p, now, "ok"))
                    path_rows.append((iid, p, now))
                    counts.added += 1
                elif iid in have:
                    counts.skipped += 1
                    continue
                else:
                    counts.reused += 1
                vec_rows.append((space_id, iid, v.tobytes()))
            _insert_all(raw, images, path_rows, vec_rows)
        return counts, next_id


def _with_vector(
    read: Callable[[str, Sequence[Any]], list], space_id: int, ids: list[int]
) -> set[int]:
    """Those of ``ids`` with a vector in a space; ``read(sql, params)`` runs on whichever
    connection the caller holds, as in ``path_owners``."""
    have: set[int] = set()
    for part in in_chunks(ids):
        marks = ",".join("?" * len(part))
        sql = f"SELECT image_id FROM vectors WHERE space_id = ? AND image_id IN ({marks})"
        have.update(r[0] for r in read(sql, [space_id, *part]))
    return have


def _insert_all(raw, images: list[tuple], path_rows: list[tuple], vec_rows: list[tuple]) -> None:
    raw.execute("BEGIN")
    try:
        raw.executemany(
            "INSERT INTO images (id, path, added_at, status) VALUES (?, ?, ?, ?)", images
        )
        raw.executemany(
            "INSERT INTO image_paths (image_id, path, added_at) VALUES (?, ?, ?)", path_rows
        )
        raw.executemany(
            "INSERT INTO vectors (space_id, image_id, vector) VALUES (?, ?, ?)", vec_rows
        )
        raw.execute("COMMIT")
    except BaseException:
        raw.execute("ROLLBACK")
        raise
