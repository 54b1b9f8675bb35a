"""FAISS index of one space: ids are image ids (IndexIDMap2), vectors are L2-normalised so
inner product is cosine similarity. The file on disk is a cache of the database's vectors."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0).astype(np.float32)


@dataclass
class IndexState:
    ids_in_index: int
    missing: int  # ids in the database but not in the index
    orphans: int  # ids in the index but not in the database
    dim_ok: bool


class SpaceIndex:
    FACTORY = "IDMap2,Flat (inner product)"

    def __init__(self, dim: int, index: faiss.Index | None = None) -> None:
        self.dim = dim
        self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.dirty = index is None  # differs from the file on disk (or there is no file)

    # --- contents -------------------------------------------------------------------------
    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(normalize(vectors), np.asarray(ids, dtype=np.int64))
            self.dirty = True

    def remove(self, ids: np.ndarray) -> int:
        if not len(ids):
            return 0
        self.dirty = True
        return int(self.index.remove_ids(np.asarray(ids, dtype=np.int64)))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(self))
        if k <= 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        return self.index.search(normalize(queries), k)

    def sync(self, db_ids: np.ndarray, fetch) -> tuple[int, int]:
        """Catch up with the database: add what is missing (``fetch(ids) -> vectors``), remove
        what the database no longer has. Returns (added, removed)."""
        have = self.ids()
        missing = np.setdiff1d(db_ids, have, assume_unique=True)
        orphans = np.setdiff1d(have, db_ids, assume_unique=True)
        removed = self.remove(orphans)
        for start in range(0, len(missing), 65536):
            chunk = missing[start : start + 65536]
            self.add(chunk, fetch(chunk))
        return len(missing), removed

    def state(self, db_ids: np.ndarray) -> IndexState:
        have = self.ids()
        return IndexState(
            ids_in_index=len(have),
            missing=len(np.setdiff1d(db_ids, have, assume_unique=True)),
            orphans=len(np.setdiff1d(have, db_ids, assume_unique=True)),
            dim_ok=self.index.d == self.dim,
        )

    # --- persistence ----------------------------------------------------------------------
    def save(self, path: Path, meta: dict) -> None:
        """Atomic: write a temporary file in the same folder, then rename over the old one."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        os.close(fd)
        try:
            faiss.write_index(self.index, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self.dirty = False
        meta_path = path.with_suffix(".json")
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=meta_path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({**meta, "dim": self.dim, "ntotal": len(self), "factory": self.FACTORY}, f)
        os.replace(tmp, meta_path)

    @classmethod
    def load(cls, path: Path, dim: int) -> SpaceIndex | None:
        """The saved index, or None when it is missing, unreadable or of another dimension."""
        if not path.exists():
            return None
        try:
            index = faiss.read_index(str(path))
        except Exception:
            return None
        if index.d != dim or not isinstance(index, faiss.IndexIDMap2):
            return None
        return cls(dim, index)


@dataclass
class IndexPlan:
    factory: str  # faiss.index_factory string (inner product metric)
    bytes: int  # estimated memory of the index
    exact: bool
    why: str


def choose_index(n: int, dim: int, memory_budget: int | None = None) -> IndexPlan:
    """The index a space of n vectors of dim dimensions gets, following the FAISS guidelines
    (github.com/facebookresearch/faiss/wiki/Guidelines-to-choose-an-index), as autofaiss does:
    exact search while it is cheap, then IVF with a number of lists ~ 4 sqrt(n) to 16 sqrt(n);
    vectors stored whole (Flat) while they fit the memory budget, else compressed (SQ8 at 1
    byte a dimension, then PQ at dim/4 bytes)."""
    flat = n * dim * 4
    ids = n * 8
    if n <= 100_000:
        return IndexPlan("IDMap2,Flat", flat + ids, True, f"{n:,} vectors: exact search is fast enough")
    nlist = int(2 ** round(np.log2(4 * np.sqrt(n))))
    budget = memory_budget if memory_budget is not None else 8 * 2**30
    if flat + ids <= budget:
        return IndexPlan(f"IVF{nlist},Flat", flat + ids + nlist * dim * 4, False,
                         f"{n:,} vectors: IVF with {nlist} lists, full vectors fit {budget / 2**30:.1f} GiB")
    sq8 = n * dim
    if sq8 + ids <= budget:
        return IndexPlan(f"IVF{nlist},SQ8", sq8 + ids + nlist * dim * 4, False,
                         f"{n:,} vectors: full vectors ({flat / 2**30:.1f} GiB) exceed the budget, 8-bit scalar quantisation")
    m = max(8, dim // 16)
    while dim % m:
        m -= 1
    return IndexPlan(f"IVF{nlist},PQ{m}", n * m + ids + nlist * dim * 4, False,
                     f"{n:,} vectors: 8-bit vectors ({sq8 / 2**30:.1f} GiB) exceed the budget, product quantisation PQ{m}")
