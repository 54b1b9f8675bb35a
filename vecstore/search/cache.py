"""The FAISS index of each space, kept caught up with the database.

The database holds the vectors; ``<store>/index/<space>.faiss`` is a cache of them. An index
is loaded from its file when the file is the one saved for that space (search.index checks
its sidecar), checked against the space's ids in the database and caught up (new ids added,
gone ids removed), or rebuilt when it is missing, untrusted, of another kind than the space
calls for now, or cannot remove. A space's vector transform (mean-centring, PCA whitening)
is part of what an index is: its vectors, and every query searched in it, go through the
transform it was built under, and an index saved or held under another transform (or none)
is rebuilt. A loaded index is trusted as long as SQLite's data_version has not moved. A
writer saves files when the index changed; a reader that had to build or catch up an index
saves it too when no writer runs (it takes the write lock for that moment only, never
waiting), so that the next reader need not do it again.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..db.lock import WriteLock
from ..db.models import Space, utcnow
from ..errors import BadInput, StoreLocked, StoreReadOnly, WriteFailed
from ..learn.knn import exact_knn, normalize
from ..learn.transform import VectorTransform, fingerprint, prepare
from ..progress import progress_bar
from ..results import IndexStats
from .choice import plan_for, wants_rebuild
from .index import TEMP_SUFFIX, IndexOwner, RebuildNeeded, SpaceIndex

if TYPE_CHECKING:  # pragma: no cover
    from ..db import Database
    from ..db.vectors import VectorsMark

ADD_ROWS = 65536  # vectors added to an index at a time


class IndexCache:
    def __init__(self, db: Database, folder: Path, *, write: bool) -> None:
        self.db = db
        self.folder = folder
        self.write = write
        self._indexes: dict[str, SpaceIndex] = {}
        self._versions: dict[str, int] = {}  # data_version each cached index was synced at
        self._marks: dict[str, VectorsMark] = {}  # the space's vectors' mark at that sync
        self._quiet_since: int | None = None  # see vectors_unchanged
        self._catching_up = threading.RLock()  # one thread syncs an index with the database
        self._searches = SharedLock()  # searches side by side, an index changed alone

    def path(self, space: Space) -> Path:
        return self.folder / f"{space.name}.faiss"

    def get(self, space: Space, *, progress: bool = False) -> SpaceIndex:
        """The space's index, caught up with the database (the file is only a cache). Many
        threads may ask at once (`vecstore serve`): one catches up; meanwhile the others get
        the index held, as it was before the commit that moved the data (a scan of the
        space's vectors, up to 80 ms at 100k beside an ingest, would queue every request),
        or wait when none is held yet. The searches themselves run side by side."""
        idx = self._in_step(space)
        if idx is not None:
            return idx
        held = self._indexes.get(space.name)
        if not self._catching_up.acquire(blocking=held is None):
            assert held is not None
            return held
        try:
            return self._in_step(space) or self._catch_up(space, progress)
        finally:
            self._catching_up.release()

    def _in_step(self, space: Space) -> SpaceIndex | None:
        """The cached index when no commit since its sync can have changed it."""
        idx = self._indexes.get(space.name)
        if idx is None:
            return None
        version = self._versions.get(space.name)
        return idx if version in (self.db.data_version(), self._quiet_since) else None

    def _catch_up(self, space: Space, progress: bool) -> SpaceIndex:
        version = self.db.data_version()
        idx = self._indexes.get(space.name)
        t = self.db.spaces.transform(space.id)
        if idx is not None and fingerprint(idx.transform) != fingerprint(t):
            idx = None  # held under the space's previous transform
        mark, held = self.db.vectors.mark(space), self._marks.get(space.name)
        if idx is not None and held is not None and held.deleted == mark.deleted:
            idx = self._take_in_added(space, idx, held.last_rowid, t, progress)
        else:
            idx = self._sync_all(space, idx, t, version, progress)
        self._indexes[space.name] = idx
        self._versions[space.name] = version
        self._marks[space.name] = mark
        return idx

    def _take_in_added(
        self, space: Space, idx: SpaceIndex, rowid: int, t: VectorTransform | None, progress: bool
    ) -> SpaceIndex:
        """Catch a held index up when nothing was deleted from its space since its mark: the
        rows written past the mark's rowid are all that can be new (a commit to another
        space, or to no vector at all, finds none). Rows an earlier catch-up read after its
        mark may come again: the ones the index holds are left out."""
        ids, vectors = self.db.vectors.added_since(space, rowid)
        if not len(ids):
            return idx
        new = ~np.isin(ids, idx.ids(), assume_unique=True)
        ids, vectors = ids[new], vectors[new]
        if wants_rebuild(space, idx, len(idx) + len(ids)):
            return self.build(space, progress=progress)
        with self._searches.alone():  # FAISS: no search beside an add
            idx.add(ids, prepare(vectors, t))
        return idx

    def _sync_all(
        self,
        space: Space,
        idx: SpaceIndex | None,
        t: VectorTransform | None,
        version: int,
        progress: bool,
    ) -> SpaceIndex:
        """Check an index (held, else loaded, else built) against every id of its space."""
        fresh = idx is None  # loaded or built now, not caught up from memory
        if idx is None:
            idx = self._load(space, t)
        db_ids = self.db.vectors.ids(space)
        if idx is None or wants_rebuild(space, idx, len(db_ids)):
            idx, fresh = self.build(space, progress=progress), True
        else:
            try:
                with self._searches.alone():  # FAISS: no search beside an add or a remove
                    idx.sync(db_ids, lambda ids: prepare(self.db.vectors.get(space, ids)[1], t))
            except RebuildNeeded:
                idx = self.build(space, progress=progress)
        if idx.dirty and fresh and not self.write:
            self._save_as_reader(space, idx, version)
        return idx

    @contextmanager
    def vectors_unchanged(self) -> Iterator[None]:
        """For a block whose commits change no vector (a label write under the one-writer
        lock, beside which no other process commits): the indexes in step when it starts
        stay in step through it and after it, without re-checking the space's vectors."""
        before = self.db.data_version()
        self._quiet_since = before
        try:
            yield
        finally:
            after = self.db.data_version()
            for name, version in list(self._versions.items()):
                if version == before:
                    self._versions[name] = after
            self._quiet_since = None

    def _load(self, space: Space, t: VectorTransform | None) -> SpaceIndex | None:
        """The saved index when it is the one saved for the space under transform ``t``."""
        idx = SpaceIndex.load(self.path(space), IndexOwner.of(space, t))
        if idx is not None:
            idx.transform = t
        return idx

    def search(self, space: Space, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, image ids) of the k nearest neighbours of raw query vectors of the
        space (stored, or embedded now), put through the transform the index was built under."""
        idx = self.get(space)
        with self._searches.shared():
            return idx.search(prepare(queries, idx.transform), k)

    def search_among(
        self, space: Space, queries: np.ndarray, k: int, ids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, image ids) of the k nearest neighbours among the images ``ids``
        only (a metadata filter): an exact search of their vectors, read from the database
        and put through the space's transform, as the index's would be. Costs the size of
        the subset, not of the space."""
        t = self.db.spaces.transform(space.id)
        have, x = self.db.vectors.get(space, ids)
        sims, rows = exact_knn(normalize(prepare(queries, t)), normalize(prepare(x, t)), k)
        return sims, np.where(rows >= 0, have[np.maximum(rows, 0)], -1)

    def refresh(self, space: Space, *, progress: bool = False) -> SpaceIndex:
        """Catch the index up with the database and save it (after a write)."""
        idx = self.get(space, progress=progress)
        self.save(space, idx)
        return idx

    def save(self, space: Space, idx: SpaceIndex) -> None:
        """Write the index file when this store writes and the index changed."""
        if not self.write:
            return
        if wants_rebuild(space, idx, len(idx)):  # e.g. a first ingest made it large
            idx = self.build(space)
        if idx.dirty or not self.path(space).exists():
            idx.save(self.path(space), IndexOwner.of(space, idx.transform))

    def _save_as_reader(self, space: Space, idx: SpaceIndex, version: int) -> None:
        """Save what this reader built, under the write lock taken without waiting: not when a
        writer runs (it saves its own), nor when one committed since ``version`` was read
        (its file is newer), nor where this user cannot write; the query goes on regardless."""
        lock = WriteLock(self.folder.parent)
        try:
            lock.acquire()
        except (StoreLocked, StoreReadOnly, OSError):
            return
        try:
            if self.db.data_version() == version and not wants_rebuild(space, idx, len(idx)):
                idx.save(self.path(space), IndexOwner.of(space, idx.transform))
        except WriteFailed:
            pass
        finally:
            lock.release()

    def build(self, space: Space, *, progress: bool = False) -> SpaceIndex:
        """Build the space's index from the database, its vectors put through the space's
        transform (the factory from ``plan_for``), tune its search parameters to recall@10 >=
        0.95 on a sample, record what was built."""
        t0 = time.perf_counter()
        t = self.db.spaces.transform(space.id)
        ids, x = self.db.vectors.get(space)
        x = prepare(x, t, inplace=True)
        dim = space.dim if t is None else t.dim_out
        factory, why = plan_for(space, len(ids), dim)
        idx = _empty(space, factory, len(ids), dim)
        idx.transform = t
        try:
            tuned = _fill(idx, ids, x, f"index {space.name}", progress)
        except RuntimeError as exc:  # FAISS refusing the factory's data or parameters
            raise BadInput(
                f"FAISS cannot build index {factory!r} for space {space.name!r}: "
                f"{_faiss_reason(exc)}; choose another --index "
                "(`--index auto` goes back to the automatic choice)"
            ) from None
        stats = IndexStats(
            factory=factory,
            why=why,
            exact=idx.exact,
            n=len(ids),
            **tuned,
            seconds=round(time.perf_counter() - t0, 2),
            built_at=utcnow().isoformat(),
        ).to_dict()  # kept as JSON in the space's row
        if self.write:
            self.db.spaces.record_index(space.id, factory, stats)
        space.index_type, space.index_stats = factory, stats
        self._indexes[space.name] = idx
        return idx

    # ---- what `vecstore check` looks at ------------------------------------------------------
    def folder_blocked(self) -> bool:
        """Something other than a folder sits where the index folder goes."""
        return self.folder.exists() and not self.folder.is_dir()

    def stray_files(self) -> list[Path]:
        """Temporary files a killed save left in the index folder."""
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if p.name.endswith(TEMP_SUFFIX))


class SharedLock:
    """Many holders at once (``shared``: searches) or one alone (``alone``: changing an
    index); one waiting to be alone goes before shared holders that come after it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._alone = False
        self._waiting = 0

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not (self._alone or self._waiting))
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @contextmanager
    def alone(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            self._cond.wait_for(lambda: not (self._alone or self._shared))
            self._waiting -= 1
            self._alone = True
        try:
            yield
        finally:
            with self._cond:
                self._alone = False
                self._cond.notify_all()


def with_settings(space: Space, factory: str | None, memory_budget: int | None) -> Space:
    """A detached copy of ``space`` with other index settings (None keeps one; "auto" is the
    automatic choice): built with before the settings are kept, so that a factory FAISS
    cannot build is never kept."""
    copy = Space(**{c.key: getattr(space, c.key) for c in Space.__table__.columns})
    if factory is not None:
        copy.index_factory = None if factory == "auto" else factory
    if memory_budget is not None:
        copy.memory_budget = memory_budget
    return copy


def _fill(idx: SpaceIndex, ids: np.ndarray, x: np.ndarray, label: str, progress: bool) -> dict:
    """Train ``idx`` on a sample of x, add every vector, tune its search parameter."""
    if not idx.index.is_trained:
        idx.train(_training_sample(x, getattr(idx.index, "nlist", 0)))
    bar = progress_bar(len(ids), label, progress)
    for start in range(0, len(ids), ADD_ROWS):
        idx.add(ids[start : start + ADD_ROWS], x[start : start + ADD_ROWS])
        bar.update(min(ADD_ROWS, len(ids) - start))
    bar.close()
    return idx.tune(x, ids)


def _empty(space: Space, factory: str, n: int, dim: int) -> SpaceIndex:
    """An empty index of ``factory`` for vectors of ``dim``, refused with a fix when it cannot
    be built or trained."""
    if "IDMap" in factory:
        raise BadInput(
            f"--index {factory!r}: vecstore keeps the image ids itself; leave IDMap out "
            f"(e.g. --index {factory.replace('IDMap2,', '').replace('IDMap,', '') or 'Flat'})"
        )
    try:
        idx = SpaceIndex.empty(dim, factory)
    except ValueError as exc:
        raise BadInput(
            f"{exc}; see https://github.com/facebookresearch/faiss/wiki/The-index-factory"
        ) from None
    lists = getattr(idx.index, "nlist", 0)
    if not idx.index.is_trained and n < max(lists, 256):
        raise BadInput(
            f"index {factory} needs at least {max(lists, 256)} vectors to train; space "
            f"{space.name!r} has {n}. Use `--index Flat` or fewer lists"
        )
    return idx


def _faiss_reason(exc: RuntimeError) -> str:
    """FAISS's own words, without the C++ function and source line before them."""
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    m = re.search(r"\.(?:cpp|h):\d+: (.+)$", text)
    return m.group(1) if m else text


def _training_sample(x: np.ndarray, lists: int) -> np.ndarray:
    """40 vectors a list, at least 20,000 (all of them when there are fewer), in row order."""
    rng = np.random.default_rng(0)
    size = min(len(x), max(40 * lists, 20000))
    return x[np.sort(rng.choice(len(x), size=size, replace=False))]
