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


def normalize(x: np.ndarray, *, inplace: bool = False) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero). A float32 array whose rows are
    already unit (or zero) comes back as it is, not copied: at a million rows a copy is GBs."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]  # no (n, d) temporary
    if np.all((np.abs(norms - 1) < 1e-5) | (norms == 0)):
        return x
    scale = np.where(norms > 0, norms, 1.0).astype(np.float32)
    if inplace:
        x /= scale
        return x
    return x / scale


@dataclass
class IndexState:
    ids_in_index: int
    missing: int  # ids in the database but not in the index
    orphans: int  # ids in the index but not in the database
    dim_ok: bool


class RebuildNeeded(Exception):
    """The index cannot remove vectors (HNSW): build it again from the database."""


EXACT_MAX_BYTES = 32 * 2**20  # a Flat scan of 32 MiB answers a query in a few ms
# search parameter ladders tried in order at build time (about x1.4 a step)
NPROBE_LADDER = (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
EFSEARCH_LADDER = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


def default_memory_budget() -> int:
    """Half of this machine's RAM."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError):
        return 8 * 2**30


def parse_size(text: str) -> int:
    """'8G', '512M', '2.5GiB' or a number of bytes -> bytes."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    mult = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}.get(t[-1:], 1)
    try:
        value = float(t[:-1] if mult > 1 else t)
    except ValueError:
        raise ValueError(f"cannot read {text!r} as a size: write e.g. 8G, 512M or 1000000") from None
    if value <= 0:
        raise ValueError(f"a memory budget must be positive, not {text!r}")
    return int(value * mult)


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
            raise ValueError(f"FAISS cannot build index {factory!r}: {str(exc).splitlines()[0]}") from None
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
        parts = [faiss.rev_swig_ptr(inv.get_ids(lst), inv.list_size(lst)).copy()
                 for lst in range(ivf.nlist) if inv.list_size(lst)]
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

    def tune(self, x: np.ndarray, ids: np.ndarray, *, target: float = 0.95, k: int = 10,
             sample: int = 1000, seed: int = 0) -> dict:
        """Smallest search parameter (nprobe / efSearch) whose recall@k against exact search
        reaches ``target`` on ``sample`` rows of x used as queries. Returns what was chosen and
        measured: {"target", "k", "params", "recall", "sample"}."""
        n = len(x)
        k = min(k, n)
        out = {"target": target, "k": k, "params": {}}
        if self.exact or n == 0:
            return {**out, "recall": 1.0, "sample": 0}
        from .graph import exact_knn

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


@dataclass
class IndexPlan:
    factory: str  # faiss.index_factory string (inner product metric)
    bytes: int  # estimated memory of the index
    exact: bool
    why: str


def choose_index(n: int, dim: int, memory_budget: int | None = None) -> IndexPlan:
    """The index a space of n vectors of dim dimensions gets, after the FAISS guidelines
    (github.com/facebookresearch/faiss/wiki/Guidelines-to-choose-an-index) and autofaiss:
    exact search while a scan of all vectors takes a few milliseconds, then IVF. The lists
    hold 8-bit scalar-quantised vectors (SQ8) while they fit the memory budget: a single query
    is bound by memory bandwidth, and SQ8 answers in half the time of full vectors at the same
    recall; past the budget, 4-bit (SQ4), then product quantisation (PQ, dim/8 bytes a vector).

    ~2 sqrt(n) lists, under the guidelines' 4-16 sqrt(n): on 1M x 512 here IVF2048,SQ8 trains
    and fills in half the time of IVF4096,SQ8 and answers a query faster at the same recall@10
    once nprobe is tuned (bench/BENCHMARKS.md, "IVF lists")."""
    ids = n * 16  # ids + the inverted-list overhead
    flat = n * dim * 4
    if flat <= EXACT_MAX_BYTES:
        return IndexPlan("Flat", flat + n * 8, True,
                         f"{n:,} vectors x {dim} ({flat / 2**20:.0f} MiB): exact search is fast enough")
    budget = memory_budget if memory_budget is not None else default_memory_budget()
    nlist = int(2 ** round(np.log2(2 * np.sqrt(n))))
    nlist = max(16, min(nlist, n // 39))  # FAISS wants >= 39 training points per list
    quant = nlist * dim * 4
    for factory, per in ((f"IVF{nlist},SQ8", dim), (f"IVF{nlist},SQ4", dim // 2)):
        if n * per + ids + quant <= budget:
            return IndexPlan(factory, n * per + ids + quant, False,
                             f"{n:,} vectors x {dim}: IVF with {nlist} lists, {per} bytes a vector "
                             f"within the {budget / 2**30:.1f} GiB budget")
    m = max(8, dim // 8)
    while dim % m:
        m -= 1
    return IndexPlan(f"IVF{nlist},PQ{m}", n * m + ids + quant, False,
                     f"{n:,} vectors x {dim}: 4-bit vectors ({n * dim / 2 / 2**30:.1f} GiB) exceed the "
                     f"{budget / 2**30:.1f} GiB budget: product quantisation, {m} bytes a vector "
                     "(recall may stay under the target)")
