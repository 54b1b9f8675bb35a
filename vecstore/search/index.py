"""The FAISS index of one space: ids are image ids (an IVF keeps them itself, any other index
is wrapped in IndexIDMap2), vectors are L2-normalised so inner product is cosine similarity.
Build, tune, search, catch up with a set of ids, save and load; the file is a cache of the
database's vectors (vecstore.search.cache decides when to trust it)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from ..learn.knn import exact_knn, normalize


@dataclass
class IndexState:
    ids_in_index: int
    missing: int  # ids in the database but not in the index
    orphans: int  # ids in the index but not in the database
    dim_ok: bool


class RebuildNeeded(Exception):
    """The index cannot remove vectors (HNSW): build it again from the database."""


# search parameter ladders tried in order at build time (about x1.4 a step)
NPROBE_LADDER = (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
EFSEARCH_LADDER = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


def _ivf(index: faiss.Index) -> faiss.IndexIVF | None:
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def _hnsw(index: faiss.Index):
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    return inner if hasattr(inner, "hnsw") else None


class SpaceIndex:
    """The index of one space. Ids are image ids: an IVF index keeps them itself (and can
    remove them); any other index (Flat, HNSW, PQ...) is wrapped in IndexIDMap2."""

    def __init__(self, dim: int, index: faiss.Index | None = None, factory: str = "Flat") -> None:
        self.dim = dim
        self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.factory = factory
        self.dirty = index is None  # differs from the file on disk (or there is no file)

    @classmethod
    def empty(cls, dim: int, factory: str) -> SpaceIndex:
        """An untrained index of the given faiss factory string, inner-product metric."""
        try:
            inner = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise ValueError(
                f"FAISS cannot build index {factory!r}: {str(exc).splitlines()[0]}"
            ) from None
        if _ivf(inner) is None:
            inner = faiss.IndexIDMap2(inner)
        idx = cls(dim, inner, factory)
        idx.dirty = True
        return idx

    @property
    def exact(self) -> bool:
        inner = self.index.index if isinstance(self.index, faiss.IndexIDMap2) else self.index
        return isinstance(faiss.downcast_index(inner), faiss.IndexFlat)

    # --- contents -------------------------------------------------------------------------
    def ids(self) -> np.ndarray:
        ivf = _ivf(self.index)
        if ivf is None:
            return faiss.vector_to_array(self.index.id_map).astype(np.int64)
        inv = ivf.invlists
        parts = [
            faiss.rev_swig_ptr(inv.get_ids(lst), inv.list_size(lst)).copy()
            for lst in range(ivf.nlist)
            if inv.list_size(lst)
        ]
        return np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def train(self, sample: np.ndarray) -> None:
        if not self.index.is_trained:
            ivf = _ivf(self.index)
            if ivf is not None:
                ivf.cp.niter = 10  # enough for a coarse quantizer; the default 25 is 2.5x the time
            self.index.train(normalize(sample))

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(normalize(vectors), np.asarray(ids, dtype=np.int64))
            self.dirty = True

    def remove(self, ids: np.ndarray) -> int:
        if not len(ids):
            return 0
        self.dirty = True
        try:
            return int(self.index.remove_ids(np.asarray(ids, dtype=np.int64)))
        except RuntimeError as exc:  # HNSW has no removal
            raise RebuildNeeded(str(exc)) from None

    def set_params(self, params: dict) -> None:
        if "nprobe" in params and (ivf := _ivf(self.index)) is not None:
            ivf.nprobe = int(params["nprobe"])
        if "efSearch" in params and (h := _hnsw(self.index)) is not None:
            h.hnsw.efSearch = int(params["efSearch"])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(self))
        if k <= 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        ivf = _ivf(self.index)
        if ivf is not None:  # one query: spread its probes over the threads, else the queries
            ivf.parallel_mode = 1 if len(queries) < faiss.omp_get_max_threads() else 0
        return self.index.search(normalize(queries), k)

    def tune(
        self,
        x: np.ndarray,
        ids: np.ndarray,
        *,
        target: float = 0.95,
        k: int = 10,
        sample: int = 1000,
        seed: int = 0,
    ) -> dict:
        """Smallest search parameter (nprobe / efSearch) whose recall@k against exact search
        reaches ``target`` on ``sample`` rows of x used as queries. Returns what was chosen and
        measured: {"target", "k", "params", "recall", "sample"}."""
        n = len(x)
        k = min(k, n)
        out = {"target": target, "k": k, "params": {}}
        if self.exact or n == 0:
            return {**out, "recall": 1.0, "sample": 0}
        rng = np.random.default_rng(seed)
        q = np.sort(rng.choice(n, size=min(sample, n), replace=False))
        xq = normalize(x[q])
        truth = ids[exact_knn(xq, normalize(x), k)[1]]
        ivf = _ivf(self.index)
        if ivf is not None:
            name, ladder = "nprobe", [p for p in NPROBE_LADDER if p <= ivf.nlist]
        elif _hnsw(self.index) is not None:
            name, ladder = "efSearch", list(EFSEARCH_LADDER)
        else:  # nothing to tune (PQ without IVF, ...): measure the recall once
            name, ladder = None, [None]
        recall = 0.0
        for value in ladder:
            if name:
                self.set_params({name: value})
            _, got = self.search(xq, k)
            recall = float(np.mean([len(np.intersect1d(a, b)) for a, b in zip(got, truth)]) / k)
            out["params"] = {name: value} if name else {}
            if recall >= target:
                break
        return {**out, "recall": round(recall, 4), "sample": len(q)}

    def sync(self, db_ids: np.ndarray, fetch) -> tuple[int, int]:
        """Catch up with the database: add what is missing (``fetch(ids) -> vectors``), remove
        what the database no longer has. Returns (added, removed); raises RebuildNeeded when
        the index cannot remove."""
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
            json.dump({**meta, "dim": self.dim, "ntotal": len(self), "factory": self.factory}, f)
        os.replace(tmp, meta_path)

    @classmethod
    def load(cls, path: Path, dim: int) -> SpaceIndex | None:
        """The saved index, or None when it is missing, unreadable or of another dimension."""
        if not path.exists():
            return None
        try:
            index = faiss.read_index(str(path))
            factory = json.loads(path.with_suffix(".json").read_text()).get("factory", "Flat")
        except Exception:
            return None
        if index.d != dim or not (isinstance(index, faiss.IndexIDMap2) or _ivf(index) is not None):
            return None
        return cls(dim, index, factory)
