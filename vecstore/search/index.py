"""The FAISS index of one space: ids are image ids (an IVF keeps them itself, any other index
is wrapped in IndexIDMap2), vectors are L2-normalised so inner product is cosine similarity.
Build, tune, search, catch up with a set of ids, save and load; the file is a cache of the
database's vectors (vecstore.search.cache decides when to use it). A saved file is loaded only
when its sidecar names its space and fingerprints its bytes and ids: a file copied from
another space, or changed since, is not trusted. When the space has a vector transform
(vecstore.learn.transform), the index holds the transformed vectors (dim_out of them) and its
sidecar the transform's fingerprint: a file saved under another transform is not used."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import faiss
import numpy as np

from ..errors import WriteFailed
from ..learn.knn import exact_knn, normalize
from ..learn.transform import RAW, fingerprint

if TYPE_CHECKING:  # pragma: no cover
    from ..db.models import Space
    from ..learn.transform import VectorTransform

META_FORMAT = 2  # sidecars without it (older vecstores) carry no fingerprint
SAMPLE_BLOCK = 2**20  # bytes hashed at each sampled place of an index file
SAMPLED_BLOCKS = 16
TEMP_SUFFIX = ".tmp"


@dataclass(frozen=True)
class IndexOwner:
    """The space an index file is saved for: its name, its id and creation time (a space of
    the same name in another store differs by them), the dimension the index holds, and the
    fingerprint of the transform its vectors went through (RAW: none)."""

    space: str
    space_id: int
    created: str
    dim: int
    transform: str = RAW

    @classmethod
    def of(cls, space: Space, transform: VectorTransform | None = None) -> IndexOwner:
        created = space.created_at.replace(tzinfo=None).isoformat() if space.created_at else ""
        dim = space.dim if transform is None else transform.dim_out
        return cls(space.name, space.id, created, dim, fingerprint(transform))


class UntrustedIndex(Exception):
    """An index file that is not the one saved for its space (its message says why).
    ``stale``: it is the space's own, only out of date (saved by an older vecstore without a
    fingerprint, or under the space's previous transform): rebuilt on next use."""

    def __init__(self, reason: str, *, stale: bool = False) -> None:
        super().__init__(reason)
        self.stale = stale


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
        # what the space's raw vectors go through before this index (set by the cache)
        self.transform: VectorTransform | None = None

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

    def orphans(self, db_ids: np.ndarray) -> np.ndarray:
        """The ids in the index the database does not have (among ``db_ids``)."""
        return np.setdiff1d(self.ids(), db_ids, assume_unique=True)

    def state(self, db_ids: np.ndarray) -> IndexState:
        have = self.ids()
        return IndexState(
            ids_in_index=len(have),
            missing=len(np.setdiff1d(db_ids, have, assume_unique=True)),
            orphans=len(np.setdiff1d(have, db_ids, assume_unique=True)),
            dim_ok=self.index.d == self.dim,
        )

    # --- persistence ----------------------------------------------------------------------
    def save(self, path: Path, owner: IndexOwner) -> None:
        """Atomic: write temporary files in the same folder, then rename them over the old
        ones: the index, and its sidecar (``<space>.json``) naming its space, fingerprinting
        its ids and tying it to these very bytes. Raises WriteFailed (disk full, a file where
        the folder should be), leaving the old files and no temporary file behind."""
        _ensure_folder(path.parent)
        tmp, meta_path = _temp_path(path), path.with_suffix(".json")
        meta_tmp = _temp_path(meta_path)
        try:
            faiss.write_index(self.index, str(tmp))
            meta = {**self._meta(owner), "file": file_signature(tmp)}
            with open(meta_tmp, "x") as f:
                json.dump(meta, f)
            os.replace(tmp, path)
            os.replace(meta_tmp, meta_path)
        except (OSError, RuntimeError) as exc:
            raise WriteFailed(
                f"could not write the index file {path} ({_reason(exc)}): free some disk "
                "space, then run `vecstore reindex`. The database is intact; the index, a "
                "cache of it, is rebuilt from it when needed"
            ) from None
        finally:
            for t in (tmp, meta_tmp):
                t.unlink(missing_ok=True)
        self.dirty = False

    def _meta(self, owner: IndexOwner) -> dict:
        return {
            "format": META_FORMAT,
            **asdict(owner),
            "factory": self.factory,
            "ntotal": len(self),
            "ids_sha256": ids_fingerprint(self.ids()),
            "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    @classmethod
    def open(cls, path: Path, owner: IndexOwner) -> SpaceIndex:
        """The index saved at ``path`` for ``owner``, once its sidecar names that space and
        ties it to these bytes and to these ids. Raises UntrustedIndex saying why not, and
        FileNotFoundError when there is no file."""
        if not path.is_file():
            raise FileNotFoundError(str(path))
        meta = _read_meta(path.with_suffix(".json"))
        mine = asdict(owner)
        theirs = {k: meta.get(k) for k in mine}
        theirs["transform"] = meta.get("transform", RAW)  # saved before transforms: raw
        if {**theirs, "transform": owner.transform, "dim": owner.dim} != mine:
            raise UntrustedIndex(
                f"it was saved for space {theirs['space']!r} (id {theirs['space_id']}, "
                f"created {theirs['created']}), not this one (id {owner.space_id}, created "
                f"{owner.created})"
            )
        if (theirs["transform"], theirs["dim"]) != (owner.transform, owner.dim):
            raise UntrustedIndex(
                f"it holds the space's vectors under another transform ({_short(theirs)}), "
                f"not its present one ({_short(mine)})",
                stale=True,
            )
        if meta.get("file") != file_signature(path):
            raise UntrustedIndex(
                f"it is not the file its sidecar {path.with_suffix('.json').name} was saved "
                "with (its size or sampled bytes differ: copied or changed since)"
            )
        idx = cls(owner.dim, read_index(path, owner.dim), meta.get("factory", "Flat"))
        if ids_fingerprint(idx.ids()) != meta.get("ids_sha256"):
            raise UntrustedIndex("its ids are not those it was saved with")
        return idx

    @classmethod
    def load(cls, path: Path, owner: IndexOwner) -> SpaceIndex | None:
        """The saved index of ``owner``, or None when it is missing or not to be trusted."""
        try:
            return cls.open(path, owner)
        except (FileNotFoundError, UntrustedIndex):
            return None


def read_index(path: Path, dim: int) -> faiss.Index:
    """The FAISS index in a file, with no check of where it came from (see SpaceIndex.open);
    raises UntrustedIndex when FAISS cannot read it or it is not an index of ``dim`` with ids."""
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as exc:
        raise UntrustedIndex(f"FAISS cannot read it ({_reason(exc)})") from None
    if index.d != dim:
        raise UntrustedIndex(f"it holds vectors of dimension {index.d}, the space {dim}")
    if not (isinstance(index, faiss.IndexIDMap2) or _ivf(index) is not None):
        raise UntrustedIndex(f"it is a {type(index).__name__}, which keeps no image ids")
    return index


def ids_fingerprint(ids: np.ndarray) -> str:
    """sha256 of the sorted ids (int64, little-endian)."""
    return hashlib.sha256(np.sort(np.asarray(ids, dtype="<i8")).tobytes()).hexdigest()


def file_signature(path: Path) -> dict:
    """The size of a file and the sha256 of sampled 1 MiB blocks (all of a file up to
    SAMPLED_BLOCKS MiB; else that many blocks spread from its start to its end): a copy or a
    rewrite is caught without reading a multi-GB file whole."""
    size = path.stat().st_size
    if size <= SAMPLE_BLOCK * SAMPLED_BLOCKS:
        offsets = range(0, size, SAMPLE_BLOCK)
    else:
        last = size - SAMPLE_BLOCK
        offsets = [i * last // (SAMPLED_BLOCKS - 1) for i in range(SAMPLED_BLOCKS)]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for off in offsets:
            f.seek(off)
            h.update(f.read(SAMPLE_BLOCK))
    return {"size": size, "sampled_sha256": h.hexdigest()}


def _read_meta(meta_path: Path) -> dict:
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise UntrustedIndex(f"its sidecar {meta_path.name} is missing", stale=True) from None
    except (OSError, ValueError) as exc:
        raise UntrustedIndex(f"its sidecar {meta_path.name} is unreadable ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        raise UntrustedIndex(
            f"its sidecar {meta_path.name} has no fingerprint (saved by an older vecstore)",
            stale=True,
        )
    return meta


def _short(owner: dict) -> str:
    """'raw, dim 512' or 'transform 3f2a9c01..., dim 50' of an owner's fields."""
    t = owner["transform"]
    return f"{t if t == RAW else 'transform ' + str(t)[:8] + '...'}, dim {owner['dim']}"


def _ensure_folder(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise WriteFailed(
            f"{folder} is a file, not the store's index folder: move it away, then run the "
            "command again (the indexes are rebuilt from the database)"
        )
    try:
        folder.mkdir(exist_ok=True)
    except OSError as exc:
        raise WriteFailed(f"cannot create the index folder {folder}: {_reason(exc)}") from None


def _temp_path(path: Path) -> Path:
    """A new name beside ``path`` ending in .tmp (what `vecstore check` calls stray when a
    killed process leaves it); the file is created with the usual permissions (umask), so
    that the team's other accounts can read the index."""
    return path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
