"""The FAISS index of each space, kept caught up with the database.

The database holds the vectors; ``<store>/index/<space>.faiss`` is a cache of them. An index
is loaded from its file, checked against the space's ids in the database and caught up (new
ids added, gone ids removed), or rebuilt when it is missing, unreadable, of another kind
than the space calls for now, or cannot remove. A loaded index is trusted as long as SQLite's
data_version has not moved. Only a writer saves files, and only when the index changed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..db.models import utcnow
from ..errors import BadInput
from ..learn.knn import normalize
from ..progress import progress_bar
from ..results import IndexStats
from .choice import plan_for, wants_rebuild
from .index import RebuildNeeded, SpaceIndex

if TYPE_CHECKING:  # pragma: no cover
    from ..db import Database
    from ..db.models import Space

ADD_ROWS = 65536  # vectors added to an index at a time


class IndexCache:
    def __init__(self, db: Database, folder: Path, *, write: bool) -> None:
        self.db = db
        self.folder = folder
        self.write = write
        self._indexes: dict[str, SpaceIndex] = {}
        self._versions: dict[str, int] = {}  # data_version each cached index was synced at

    def path(self, space: Space) -> Path:
        return self.folder / f"{space.name}.faiss"

    def get(self, space: Space, *, progress: bool = False) -> SpaceIndex:
        """The space's index, caught up with the database (the file is only a cache)."""
        version = self.db.data_version()
        idx = self._indexes.get(space.name)
        if idx is not None and self._versions.get(space.name) == version:
            return idx
        if idx is None:
            idx = self._load(space)
        db_ids = self.db.vectors.ids(space)
        if idx is None or wants_rebuild(space, idx, len(db_ids)):
            idx = self.build(space, progress=progress)
        else:
            try:
                idx.sync(db_ids, lambda ids: self.db.vectors.get(space, ids)[1])
            except RebuildNeeded:
                idx = self.build(space, progress=progress)
        self._indexes[space.name] = idx
        self._versions[space.name] = version
        return idx

    def _load(self, space: Space) -> SpaceIndex | None:
        idx = SpaceIndex.load(self.path(space), space.dim)
        if idx is not None and space.index_stats:
            idx.set_params(space.index_stats.get("params") or {})
        return idx

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
            meta = {"space": space.name, "saved_at": utcnow().isoformat()}
            idx.save(self.path(space), meta)

    def build(self, space: Space, *, progress: bool = False) -> SpaceIndex:
        """Build the space's index from the database (the factory from ``plan_for``), tune its
        search parameters to recall@10 >= 0.95 on a sample, record what was built."""
        t0 = time.perf_counter()
        ids, x = self.db.vectors.get(space)
        normalize(x, inplace=True)
        factory, why = plan_for(space, len(ids))
        idx = _empty(space, factory, len(ids))
        if not idx.index.is_trained:
            idx.train(_training_sample(x, getattr(idx.index, "nlist", 0)))
        bar = progress_bar(len(ids), f"index {space.name}", progress)
        for start in range(0, len(ids), ADD_ROWS):
            idx.add(ids[start : start + ADD_ROWS], x[start : start + ADD_ROWS])
            bar.update(min(ADD_ROWS, len(ids) - start))
        bar.close()
        tuned = idx.tune(x, ids)
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


def _empty(space: Space, factory: str, n: int) -> SpaceIndex:
    """An empty index of ``factory``, refused with a fix when it cannot be built or trained."""
    try:
        idx = SpaceIndex.empty(space.dim, factory)
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


def _training_sample(x: np.ndarray, lists: int) -> np.ndarray:
    """40 vectors a list, at least 20,000 (all of them when there are fewer), in row order."""
    rng = np.random.default_rng(0)
    size = min(len(x), max(40 * lists, 20000))
    return x[np.sort(rng.choice(len(x), size=size, replace=False))]
