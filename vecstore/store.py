"""The Store facade: the one place that keeps SQLite rows and FAISS ids in sync.

The CLI (and any server) calls only this. A store is a folder::

    <store>/vecstore.db          SQLite (WAL): images, paths, spaces, vectors, labels, runs
    <store>/index/<space>.faiss  FAISS index per space, a cache rebuilt from the database
    <store>/write.lock           held (flock) by the one process that writes

Example::

    with Store.open(".vecstore", create=True, write=True) as store:
        report = store.ingest("scans/", spaces=["hog"], labels_from_folders=True)
    with Store.open(".vecstore") as store:
        result = store.query(path="scans/a.png", k=5)
"""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import bindparam, delete, func, insert, select, text, update
from sqlalchemy.orm import Session

from . import __version__
from .csvfiles import read_user_csv
from .db import current_revision, head_revision, make_engine, run_migrations, session_factory
from .embedders import NAMES, Embedder, SpaceInfo, get_embedder, is_cnn, open_image
from .embedders.classic import CLASSIC
from .errors import (
    BadInput,
    EmbedError,
    StoreLocked,
    StoreNotFound,
    UnknownImage,
    UnknownSpace,
    VecstoreError,
)
from .importer import VectorFile
from .index import RebuildNeeded, SpaceIndex, choose_index, normalize
from .labeling import LabelingMixin
from .models import Image, ImagePath, Label, Run, Space, Vector, utcnow
from .scan import DEFAULT_UNLABELED, Found, folder_label, sha256_bytes, walk_images

DB_NAME = "vecstore.db"
DEFAULT_STORE = ".vecstore"
COMMIT_EVERY = 256
METADATA_KEYS = ("path", "file", "filename", "file_name", "name", "image")


def resolve_store_path(option: str | None) -> Path:
    """--store, then $VECSTORE_STORE, then ./.vecstore."""
    return Path(option or os.environ.get("VECSTORE_STORE") or DEFAULT_STORE).expanduser()


def default_space_for_new_store() -> str:
    return "resnet18"


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------


@dataclass
class SpaceEmbedStats:
    space: str
    embedded: int = 0
    failed: int = 0
    seconds: float = 0.0
    device: str = "cpu"
    weights: str = "none"
    weights_random: bool = False
    # descriptors are computed together in one pass over the files: their time is that pass's
    shared_with: list[str] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0


@dataclass
class IngestReport:
    root: str
    run_id: int | None = None
    scanned: int = 0
    added: int = 0
    unchanged: int = 0
    changed: int = 0
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (new path, existing path)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    labels_added: int = 0
    label_conflicts: list[tuple[str, str, str]] = field(default_factory=list)  # path, old, new
    metadata_matched: int = 0
    metadata_unmatched: list[str] = field(default_factory=list)
    embedded: list[SpaceEmbedStats] = field(default_factory=list)
    scan_vectors: dict[str, int] = field(default_factory=dict)  # space -> vectors made in the scan
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "run_id": self.run_id,
            "scanned": self.scanned,
            "added": self.added,
            "unchanged": self.unchanged,
            "changed": self.changed,
            "duplicates": [{"path": p, "same_as": q} for p, q in self.duplicates],
            "failed": [{"path": p, "reason": r} for p, r in self.failed],
            "labels_added": self.labels_added,
            "label_conflicts": [
                {"path": p, "kept": old, "ignored": new} for p, old, new in self.label_conflicts
            ],
            "metadata_matched": self.metadata_matched,
            "metadata_unmatched": self.metadata_unmatched,
            "embedded": [
                {
                    "space": s.space,
                    "embedded": s.embedded,
                    "failed": s.failed,
                    "seconds": round(s.seconds, 3),
                    "images_per_s": round(s.per_second, 1),
                    "device": s.device,
                    "weights": s.weights,
                    "weights_random": s.weights_random,
                    "shared_with": s.shared_with,
                }
                for s in self.embedded
            ],
            "seconds": round(self.seconds, 3),
        }


@dataclass
class Hit:
    rank: int
    id: int
    path: str
    similarity: float
    label: str | None


@dataclass
class QueryResult:
    space: str
    weights: str
    weights_random: bool
    query: str
    query_id: int | None
    hits: list[Hit]


@dataclass
class CheckReport:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _read_and_decode(found: Found, features: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read a file once: content hash, a full decode to validate it, and the descriptor
    features of ``features`` (space name -> function of the decoded image). Runs in threads."""
    out: dict[str, Any] = {"found": found, "sha256": None, "error": found.error, "features": {}}
    if found.error:
        return out
    try:
        with open(found.path, "rb") as f:
            data = f.read()
    except OSError as exc:
        out["error"] = f"cannot read file: {exc.strerror or exc}"
        return out
    out["sha256"] = sha256_bytes(data)
    out["size"] = len(data)
    if not data:
        out["error"] = "empty file (0 bytes)"
        return out
    try:
        img = open_image(data)
        out["width"], out["height"], out["mode"] = img.width, img.height, img.mode
        for name, fn in (features or {}).items():
            out["features"][name] = fn(img)
    except EmbedError as exc:
        out["error"] = str(exc)
    except Exception as exc:  # a descriptor failing on odd content must not stop the run
        out["error"] = f"cannot compute features: {type(exc).__name__}: {exc}"
    return out


@dataclass
class _Row:
    id: int
    sha256: str
    status: str
    path: str


def _vectors_from_blobs(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    if not blobs:
        return np.zeros((0, dim), np.float32)
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dim)


# Lock file descriptors held by this process. A forked child (scan workers, DataLoader
# workers) must not keep them: flock belongs to the open file, so a child that outlives a
# killed parent would keep the store locked.
_HELD_LOCK_FDS: set[int] = set()


def _close_lock_fds_in_child() -> None:
    for fd in list(_HELD_LOCK_FDS):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD_LOCK_FDS.clear()


os.register_at_fork(after_in_child=_close_lock_fds_in_child)


def _die_with_parent() -> None:
    """Pool initializer: a worker gets SIGKILL when its parent dies (Linux), so a killed
    ingest leaves no orphan processes behind."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: workers end when their queue closes
        pass


class _InlineExecutor(Executor):
    """map() in the calling thread: for a handful of files a pool costs more than it saves."""

    def map(self, fn, *iterables, timeout=None, chunksize=1):  # noqa: ARG002
        return map(fn, *iterables)


def _scan_pool(n_files: int) -> Executor:
    """Processes for hashing, decoding and descriptors (they hold the GIL in threads).
    fork is what torch's DataLoader uses too; children never touch torch."""
    workers = min(os.cpu_count() or 1, 8)
    if n_files < 64 or workers < 2:
        return _InlineExecutor()
    try:
        return ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("fork"), initializer=_die_with_parent
        )
    except (OSError, ValueError):  # no fork on this platform or no process slots
        return ThreadPoolExecutor(workers)


def _progress(total: int | None, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total, desc=desc, unit="img", disable=not enabled, leave=False, dynamic_ncols=True
    )


# --------------------------------------------------------------------------------------------
# the store
# --------------------------------------------------------------------------------------------


class Store(LabelingMixin):
    def __init__(self, path: Path, *, write: bool) -> None:
        self.path = path
        self.db_path = path / DB_NAME
        self.index_dir = path / "index"
        self.write = write
        self._lock_fd: int | None = None
        self._indexes: dict[str, SpaceIndex] = {}
        self._index_versions: dict[str, int] = {}  # data_version each cached index was synced at
        self._watch: sqlite3.Connection | None = None
        self._spaces_cache: tuple[int, list[Space]] | None = None
        self.engine = None
        self.Session = None

    # ---- opening, locking -------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike[str], *, create: bool = False, write: bool = False) -> Store:
        """Open a store (creating it when ``create``); ``write`` takes the one-writer lock."""
        p = Path(path).expanduser()
        if p.exists() and not p.is_dir():
            raise BadInput(f"--store {p} is a file, not a vecstore folder; choose another path")
        if not (p / DB_NAME).exists():
            if not create:
                raise StoreNotFound(str(p))
            p.mkdir(parents=True, exist_ok=True)
        store = cls(p, write=write or create)
        try:
            if store.write:
                store._acquire_lock()
            store.engine = make_engine(store.db_path)
            store.Session = session_factory(store.engine)
            store._migrate()
        except BaseException:
            store.close()
            raise
        return store

    def _acquire_lock(self) -> None:
        lock_path = self.path / "write.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or None
            os.close(fd)
            raise StoreLocked(str(self.path), holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        _HELD_LOCK_FDS.add(fd)
        self._lock_fd = fd  # the kernel drops the lock if this process dies, even by SIGKILL

    def _migrate(self) -> None:
        assert self.engine is not None
        current = current_revision(self.engine)
        if current == head_revision():
            return
        if not self.write:
            # A reader may not change the schema under a writer: take the lock just for this.
            self._acquire_lock()
            try:
                run_migrations(self.engine)
            finally:
                self._release_lock()
        else:
            run_migrations(self.engine)

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            _HELD_LOCK_FDS.discard(self._lock_fd)
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        if self.engine is not None:
            self.engine.dispose()
        self._release_lock()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def session(self) -> Session:
        assert self.Session is not None
        return self.Session()

    def _require_write(self) -> None:
        if not self.write:
            raise VecstoreError("internal: this operation needs a store opened with write=True")

    # ---- spaces -------------------------------------------------------------------------------
    def spaces(self) -> list[Space]:
        # cached until the database changes (PRAGMA data_version): a query is a few ms
        version = self._data_version()
        if self._spaces_cache is None or self._spaces_cache[0] != version:
            with self.session() as s:
                self._spaces_cache = (version, list(s.scalars(select(Space).order_by(Space.id))))
        return list(self._spaces_cache[1])

    def get_space(self, name: str | None) -> Space:
        """The named space, or the store's first space when ``name`` is None."""
        spaces = self.spaces()
        if not spaces:
            raise UnknownSpace(
                "this store has no embedding space yet; run `vecstore ingest DIR --space NAME` "
                "or `vecstore embed --space NAME`"
            )
        if name is None:
            return spaces[0]
        for sp in spaces:
            if sp.name == name:
                return sp
        raise UnknownSpace(
            f"space {name!r} is not in this store (it has: {', '.join(s.name for s in spaces)}); "
            f"add it with `vecstore embed --space {name}`"
        )

    def _embedder_for(
        self, name: str, weights: str | None, device: str, batch_size: int | None, workers: int | None
    ) -> Embedder:
        """Build the embedder of a space, holding an existing space to the weights it was made with."""
        if name not in NAMES:
            raise UnknownSpace(f"unknown space {name!r}; choose one of: {', '.join(NAMES)}")
        with self.session() as s:
            existing = s.scalar(select(Space).where(Space.name == name))
        if existing is not None and is_cnn(name):
            from .embedders.resnet import weights_spec

            if weights is None:
                weights = existing.weights
            elif weights_spec(weights) != existing.weights:
                raise BadInput(
                    f"space {name!r} holds vectors made with weights {existing.weights}; "
                    f"--weights {weights} would mix two models in one space. Drop --weights "
                    "to use the recorded ones, or use another store for the other weights."
                )
        emb = get_embedder(
            name, weights=weights, device=device, batch_size=batch_size, workers=workers
        )
        if existing is not None:
            if existing.dim != emb.info.dim:
                raise BadInput(f"space {name!r} has dim {existing.dim}, the embedder gives {emb.info.dim}")
            if existing.weights_sha256 and emb.info.weights_sha256 != existing.weights_sha256:
                raise BadInput(
                    f"the weights file of space {name!r} changed since its vectors were made "
                    f"(sha256 {existing.weights_sha256[:12]}... recorded, "
                    f"{(emb.info.weights_sha256 or '?')[:12]}... now); restore the file or use "
                    "another store"
                )
        return emb

    def _ensure_space(self, s: Session, info: SpaceInfo) -> Space:
        sp = s.scalar(select(Space).where(Space.name == info.name))
        if sp is None:
            sp = Space(
                name=info.name,
                model=info.model,
                layer=info.layer,
                dim=info.dim,
                preprocessing=info.preprocessing,
                weights=info.weights,
                weights_random=info.weights_random,
                weights_sha256=info.weights_sha256,
            )
            s.add(sp)
            s.flush()
        return sp

    # ---- ingest -------------------------------------------------------------------------------
    def ingest(
        self,
        root: str | os.PathLike[str],
        spaces: Sequence[str] | None = None,
        *,
        labels_from_folders: bool = False,
        unlabeled_names: Iterable[str] = DEFAULT_UNLABELED,
        metadata_csv: str | os.PathLike[str] | None = None,
        weights: str | None = None,
        device: str = "auto",
        batch_size: int | None = None,
        workers: int | None = None,
        progress: bool = False,
    ) -> IngestReport:
        """Register every image under ``root`` and embed the new ones in each space."""
        self._require_write()
        root = os.path.abspath(root)
        if not os.path.isdir(root):
            raise BadInput(f"{root} is not a folder; `vecstore ingest` takes a folder of images")
        if not spaces:
            spaces = [sp.name for sp in self.spaces()] or [default_space_for_new_store()]
        spaces = list(dict.fromkeys(spaces))
        # Everything that can fail on bad options fails before any file is touched.
        metadata = _read_metadata_csv(metadata_csv) if metadata_csv else None
        embedders = [self._embedder_for(n, weights if is_cnn(n) else None, device, batch_size, workers)
                     for n in spaces]

        t0 = time.perf_counter()
        report = IngestReport(root=root)
        run_id = self._start_run(
            "ingest",
            None,
            {
                "root": root,
                "spaces": spaces,
                "labels_from_folders": labels_from_folders,
                "unlabeled_names": list(unlabeled_names),
                "metadata_csv": str(metadata_csv) if metadata_csv else None,
                "device": device,
                "batch_size": batch_size,
            },
        )
        report.run_id = run_id
        try:
            self._ingest_phases(root, embedders, labels_from_folders, unlabeled_names, metadata,
                                report, progress)
        except BaseException as exc:
            self._finish_run(run_id, {**report.to_dict(), "error": repr(exc)}, status="failed")
            raise
        report.seconds = time.perf_counter() - t0
        self._finish_run(run_id, report.to_dict())
        return report

    def _ingest_phases(
        self, root: str, embedders: Sequence[Embedder], labels_from_folders: bool,
        unlabeled_names: Iterable[str], metadata: tuple | None, report: IngestReport, progress: bool,
    ) -> None:
        scan_t0 = time.perf_counter()
        path_to_image = self._register_files(root, report, progress, embedders)
        scan_seconds = time.perf_counter() - scan_t0
        if labels_from_folders:
            self._labels_from_folders(root, path_to_image, unlabeled_names, report)
        if metadata is not None:
            self._apply_metadata(root, metadata, path_to_image, report)
        in_scan = [n for n, c in report.scan_vectors.items() if c]
        for emb in embedders:
            stats = self._embed_space(emb, progress)
            scanned = report.scan_vectors.get(emb.info.name, 0)
            if scanned:  # descriptor vectors made while scanning: that time is theirs too
                stats.embedded += scanned
                stats.seconds += scan_seconds
                stats.shared_with = [n for n in in_scan if n != emb.info.name]
            report.embedded.append(stats)

    def _register_files(
        self, root: str, report: IngestReport, progress: bool, embedders: Sequence[Embedder]
    ) -> dict[str, int]:
        """Phase 1: one row per distinct content, one path row per file, and the descriptor
        vectors of new images, written together in batches. Returns path -> image id for every
        file found that holds a usable image."""
        found = list(walk_images(root))
        report.scanned = len(found)
        # Descriptors are cheap: compute them from the decode that validates the file, so a
        # new file is read and decoded once. CNN spaces batch on their own in phase 2.
        space_ids: dict[str, int] = {}
        features: dict[str, Any] = {}
        with self.session() as s:
            for emb in embedders:
                space_ids[emb.info.name] = self._ensure_space(s, emb.info).id
                if not is_cnn(emb.info.name):
                    features[emb.info.name] = CLASSIC[emb.info.name][0]  # picklable function
            s.commit()
            next_id = (s.scalar(select(func.max(Image.id))) or 0) + 1
        path_to_image: dict[str, int] = {}
        bar = _progress(len(found), "scan", progress)
        work = partial(_read_and_decode, features=features)
        with _scan_pool(len(found)) as pool:
            for start in range(0, len(found), COMMIT_EVERY):
                chunk = found[start : start + COMMIT_EVERY]
                with self.session() as s:
                    next_id = self._register_chunk(
                        s, chunk, pool, work, next_id, space_ids, path_to_image, report
                    )
                    s.commit()  # rows, paths and vectors of a chunk land together or not at all
                bar.update(len(chunk))
        bar.close()
        return path_to_image

    def _register_chunk(
        self, s: Session, chunk: Sequence[Found], pool: Executor, work, next_id: int,
        space_ids: dict[str, int], path_to_image: dict[str, int], report: IngestReport,
    ) -> int:
        known = {
            r.path: r
            for r in s.execute(
                select(
                    ImagePath.id.label("path_id"), ImagePath.path, ImagePath.image_id,
                    ImagePath.size, ImagePath.mtime_ns, Image.status, Image.sha256,
                )
                .join(Image, Image.id == ImagePath.image_id)
                .where(ImagePath.path.in_([f.path for f in chunk]))
            )
        }
        todo = []
        for f in chunk:
            k = known.get(f.path)
            if k and f.error is None and (k.size, k.mtime_ns, k.status) == (f.size, f.mtime_ns, "ok"):
                report.unchanged += 1  # same size and mtime: not even read again
                path_to_image[f.path] = k.image_id
            else:
                todo.append(f)
        if not todo:
            return next_id
        results = list(pool.map(work, todo, chunksize=max(1, len(todo) // 32)))
        shas = [r["sha256"] for r in results if r["sha256"]]
        by_sha = {
            r.sha256: r
            for r in s.execute(
                select(Image.id, Image.sha256, Image.status, Image.path).where(Image.sha256.in_(shas))
            )
        }
        new_images: list[dict[str, Any]] = []
        new_vectors: list[dict[str, Any]] = []
        new_paths: list[dict[str, Any]] = []
        path_updates: list[dict[str, Any]] = []
        moved: list[tuple[int, int]] = []  # (path row id, previous image id)
        for res in results:
            f: Found = res["found"]
            sha, error = res["sha256"], res["error"]
            k = known.get(f.path)
            if error is not None:
                report.failed.append((f.path, error))
            if sha is None and k is not None and k.sha256 is None:
                # still unreadable: refresh the reason, keep the row
                s.execute(update(Image).where(Image.id == k.image_id).values(error=error))
                continue
            hit = by_sha.get(sha) if sha else None
            if hit is None and error is None and k is not None and k.sha256 is None and k.status == "ok":
                # an image known from import-vectors, read for the first time: same image id
                # (its imported vectors stay), now with its content hash and descriptors
                s.execute(update(Image).where(Image.id == k.image_id).values(
                    sha256=sha, size=res.get("size", f.size), width=res.get("width"),
                    height=res.get("height"), mode=res.get("mode")))
                by_sha[sha] = _Row(k.image_id, sha, "ok", f.path)
                path_to_image[f.path] = k.image_id
                path_updates.append({"b_id": k.path_id, "b_image_id": k.image_id, "b_size": f.size,
                                     "b_mtime": f.mtime_ns})
                report.added += 1
                for name, v in res["features"].items():
                    new_vectors.append({"image_id": k.image_id, "space_id": space_ids[name],
                                        "vector": np.asarray(v, np.float32).tobytes()})
                    report.scan_vectors[name] = report.scan_vectors.get(name, 0) + 1
                continue
            if hit is not None:
                iid = hit.id
                if error is None and hit.status == "ok" and (k is None or k.image_id != iid):
                    report.duplicates.append((f.path, hit.path))
            else:
                iid, next_id = next_id, next_id + 1
                new_images.append(
                    {
                        "id": iid, "sha256": sha, "path": f.path, "size": res.get("size", f.size),
                        "width": res.get("width"), "height": res.get("height"),
                        "mode": res.get("mode"), "status": "ok" if error is None else "failed",
                        "error": error,
                    }
                )
                if sha:  # later files of this chunk with the same bytes are duplicates
                    by_sha[sha] = _Row(iid, sha, "ok" if error is None else "failed", f.path)
                if error is None:
                    report.added += 1
                    for name, v in res["features"].items():
                        new_vectors.append(
                            {"image_id": iid, "space_id": space_ids[name],
                             "vector": np.asarray(v, np.float32).tobytes()}
                        )
                        report.scan_vectors[name] = report.scan_vectors.get(name, 0) + 1
            if error is None:
                path_to_image[f.path] = iid
            if k is None:
                new_paths.append({"image_id": iid, "path": f.path, "size": f.size, "mtime_ns": f.mtime_ns})
            else:
                path_updates.append(
                    {"b_id": k.path_id, "b_image_id": iid, "b_size": f.size, "b_mtime": f.mtime_ns}
                )
                if k.image_id == iid:
                    if error is None:
                        report.unchanged += 1  # touched, same bytes
                else:
                    moved.append((k.path_id, k.image_id))
                    if error is None and k.status == "ok":
                        report.changed += 1
        if new_images:
            s.execute(insert(Image), new_images)
        if new_vectors:
            s.execute(insert(Vector), new_vectors)
        if new_paths:
            s.execute(insert(ImagePath), new_paths)
        if path_updates:  # after the inserts: a path may now point at an image made just above
            tbl = ImagePath.__table__
            s.connection().execute(
                tbl.update()
                .where(tbl.c.id == bindparam("b_id"))
                .values(image_id=bindparam("b_image_id"), size=bindparam("b_size"),
                        mtime_ns=bindparam("b_mtime")),
                path_updates,
            )
        for _, previous in moved:
            self._drop_if_pathless(s, previous)
        return next_id

    def _drop_if_pathless(self, s: Session, image_id: int) -> None:
        """An image whose last path now holds other bytes is gone (vectors and labels too)."""
        remaining = s.scalar(select(ImagePath.path).where(ImagePath.image_id == image_id).limit(1))
        if remaining is None:
            s.execute(delete(Image).where(Image.id == image_id))  # ON DELETE CASCADE
        else:
            s.execute(update(Image).where(Image.id == image_id).values(path=remaining))

    def _labels_from_folders(
        self, root: str, path_to_image: dict[str, int], unlabeled: Iterable[str], report: IngestReport
    ) -> None:
        unlabeled = list(unlabeled)
        with self.session() as s:
            existing = dict(s.execute(select(Label.image_id, Label.label)).all())
            for path, iid in path_to_image.items():
                lab = folder_label(path, root, unlabeled)
                if lab is None:
                    continue
                old = existing.get(iid)
                if old is None:
                    s.add(Label(image_id=iid, label=lab, source="folder"))
                    existing[iid] = lab
                    report.labels_added += 1
                elif old != lab:
                    report.label_conflicts.append((path, old, lab))
            s.commit()

    def _apply_metadata(
        self, root: str, metadata: tuple[str, dict[str, dict[str, Any]]], path_to_image: dict[str, int],
        report: IngestReport,
    ) -> None:
        key_kind, rows = metadata
        by_key: dict[str, list[int]] = {}
        for path, iid in path_to_image.items():
            if key_kind == "path":
                keys = {path, os.path.relpath(path, root)}
            else:
                keys = {os.path.basename(path)}
            for k in keys:
                by_key.setdefault(os.path.normpath(k), []).append(iid)
        with self.session() as s:
            for key, values in rows.items():
                ids = by_key.get(os.path.normpath(key))
                if not ids:
                    report.metadata_unmatched.append(key)
                    continue
                for iid in set(ids):
                    img = s.get(Image, iid)
                    assert img is not None
                    img.metadata_json = {**(img.metadata_json or {}), **values}
                    report.metadata_matched += 1
            s.commit()

    # ---- embedding ----------------------------------------------------------------------------
    def embed(
        self,
        spaces: Sequence[str],
        *,
        weights: str | None = None,
        device: str = "auto",
        batch_size: int | None = None,
        workers: int | None = None,
        progress: bool = False,
    ) -> list[SpaceEmbedStats]:
        """Add spaces to (or catch up spaces of) the images already in the store."""
        self._require_write()
        if not spaces:
            raise BadInput("name at least one space with --space")
        embedders = [self._embedder_for(n, weights if is_cnn(n) else None, device, batch_size, workers)
                     for n in dict.fromkeys(spaces)]
        out = []
        for emb in embedders:
            run_id = self._start_run("embed", emb.info.name, {"device": device, "batch_size": batch_size})
            try:
                stats = self._embed_space(emb, progress)
            except BaseException as exc:
                self._finish_run(run_id, {"error": repr(exc)}, status="failed")
                raise
            self._finish_run(run_id, {"embedded": stats.embedded, "failed": stats.failed,
                                      "seconds": stats.seconds, "images_per_s": stats.per_second,
                                      "device": stats.device})
            out.append(stats)
        return out

    def _embed_space(self, emb: Embedder, progress: bool) -> SpaceEmbedStats:
        info = emb.info
        stats = SpaceEmbedStats(
            space=info.name,
            device=getattr(emb, "device", "cpu"),
            weights=info.weights,
            weights_random=info.weights_random,
        )
        with self.session() as s:
            space = self._ensure_space(s, info)
            s.commit()
            space_id = space.id
            done = select(Vector.image_id).where(Vector.space_id == space_id)
            todo = [
                (iid, path)
                for iid, path in s.execute(
                    select(Image.id, Image.path)
                    # sha256 NULL: imported vectors, the file never read here (maybe not on this machine)
                    .where(Image.status == "ok", Image.sha256.is_not(None), Image.id.not_in(done))
                    .order_by(Image.id)
                )
            ]
        index = self._load_index(space)
        if todo:
            bar = _progress(len(todo), info.name, progress)
            t0 = time.perf_counter()
            with self.session() as s:
                for ids, vecs, failed in emb.embed_files(todo):
                    if ids:
                        s.execute(
                            insert(Vector),
                            [
                                {"image_id": i, "space_id": space_id, "vector": v.tobytes()}
                                for i, v in zip(ids, np.asarray(vecs, dtype=np.float32))
                            ],
                        )
                    for iid, reason in failed:
                        img = s.get(Image, iid)
                        if img is not None:
                            img.status, img.error = "failed", f"{info.name}: {reason}"
                    s.commit()  # each batch is durable on its own: a crash loses at most one
                    index.add(np.asarray(ids, dtype=np.int64), vecs)
                    stats.embedded += len(ids)
                    stats.failed += len(failed)
                    bar.update(len(ids) + len(failed))
            stats.seconds = time.perf_counter() - t0
            bar.close()
        self._save_index(space, index)
        return stats

    # ---- precomputed vectors --------------------------------------------------------------------
    def import_vectors(self, vector_file: VectorFile, space: str, *, progress: bool = False) -> dict[str, Any]:
        """Make precomputed embeddings a space: each path becomes an image (or finds the one
        it already is), each row its vector in ``space``. The file is validated whole first;
        rows are then written in chunks, each in one transaction, so an interrupted import
        resumes where it stopped when run again (images that have a vector are skipped)."""
        self._require_write()
        t0 = time.perf_counter()
        rows, dim = vector_file.validate()
        with self.session() as s:
            sp = s.scalar(select(Space).where(Space.name == space))
            if sp is None:
                if space in NAMES:
                    raise BadInput(f"{space!r} is a built-in space computed by vecstore; name the imported "
                                   "vectors after their model, e.g. --space clip-vit-b32")
                sp = Space(name=space, model="imported", layer=None, dim=dim,
                           preprocessing=f"precomputed, imported from {vector_file.path.name}",
                           weights="unknown (precomputed vectors)", weights_random=False)
                s.add(sp)
                s.commit()
            elif sp.model != "imported":
                raise BadInput(f"space {space!r} is computed by vecstore ({sp.model}); import into another space")
            elif sp.dim != dim:
                raise BadInput(f"space {space!r} has dimension {sp.dim}; {vector_file.path} has {dim}")
            space_id = sp.id
            next_id = (s.scalar(select(func.max(Image.id))) or 0) + 1
        added = reused = skipped = 0
        bar = _progress(rows, f"import {space}", progress)
        with self.engine.connect() as conn:
            raw = conn.connection.driver_connection
            for _, paths, x in vector_file.chunks(dim):
                resolved = [vector_file.resolve(p) for p in paths]
                known: dict[str, int] = {}
                for start in range(0, len(resolved), 30000):
                    part = resolved[start : start + 30000]
                    marks = ",".join("?" * len(part))
                    known.update(raw.execute(
                        f"SELECT path, image_id FROM image_paths WHERE path IN ({marks})", part).fetchall())
                have = set()
                if known:
                    ids_known = list(known.values())
                    for start in range(0, len(ids_known), 30000):
                        part = ids_known[start : start + 30000]
                        have.update(r[0] for r in raw.execute(
                            f"SELECT image_id FROM vectors WHERE space_id = ? AND image_id IN "
                            f"({','.join('?' * len(part))})", [space_id, *part]))
                now = utcnow().strftime("%Y-%m-%d %H:%M:%S.%f")  # SQLAlchemy's SQLite DATETIME format
                images, path_rows, vec_rows = [], [], []
                for p, v in zip(resolved, x):
                    iid = known.get(p)
                    if iid is None:
                        iid, next_id = next_id, next_id + 1
                        images.append((iid, p, now, "ok"))
                        path_rows.append((iid, p, now))
                        added += 1
                    elif iid in have:
                        skipped += 1
                        continue
                    else:
                        reused += 1
                    vec_rows.append((space_id, iid, v.tobytes()))
                raw.execute("BEGIN")
                try:
                    raw.executemany("INSERT INTO images (id, path, added_at, status) VALUES (?, ?, ?, ?)", images)
                    raw.executemany("INSERT INTO image_paths (image_id, path, added_at) VALUES (?, ?, ?)", path_rows)
                    raw.executemany("INSERT INTO vectors (space_id, image_id, vector) VALUES (?, ?, ?)", vec_rows)
                    raw.execute("COMMIT")
                except BaseException:
                    raw.execute("ROLLBACK")
                    raise
                bar.update(len(paths))
        bar.close()
        seconds_rows = time.perf_counter() - t0
        sp = self.get_space(space)
        self._save_index(sp, self._load_index(sp, progress=progress))  # builds set sp.index_stats
        return {"space": space, "dim": dim, "rows": rows, "new_images": added, "existing_images": reused,
                "skipped_already_imported": skipped, "seconds_rows": round(seconds_rows, 2),
                "seconds": round(time.perf_counter() - t0, 2), "index": sp.index_stats}

    # ---- vectors and indexes -------------------------------------------------------------------
    def vector_ids(self, space: Space) -> np.ndarray:
        with self.engine.connect() as conn:
            cur = conn.connection.driver_connection.execute(
                "SELECT image_id FROM vectors WHERE space_id = ? ORDER BY image_id", (space.id,))
            return np.fromiter((r[0] for r in cur), dtype=np.int64)

    def vectors(self, space: Space, ids: Sequence[int] | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of a space, all of them or the given ids, in id order."""
        if ids is not None:
            with self.session() as s:
                q = select(Vector.image_id, Vector.vector).where(Vector.space_id == space.id)
                wanted = [int(i) for i in ids]
                rows = []
                for start in range(0, len(wanted), 30000):  # SQLite's bound-parameter limit
                    chunk = wanted[start : start + 30000]
                    rows.extend(s.execute(q.where(Vector.image_id.in_(chunk))).all())
                rows.sort()
            out_ids = np.asarray([r[0] for r in rows], dtype=np.int64)
            return out_ids, _vectors_from_blobs([r[1] for r in rows], space.dim)
        return self._all_vectors(space)

    def _all_vectors(self, space: Space) -> tuple[np.ndarray, np.ndarray]:
        """All vectors of a space, straight from the DB-API cursor into one preallocated array
        (no ORM rows, no list of blobs: 1M x 512 loads in seconds with one copy in memory)."""
        dim, width = space.dim, space.dim * 4
        with self.engine.connect() as conn:
            raw = conn.connection.driver_connection
            n = raw.execute("SELECT count(*) FROM vectors WHERE space_id = ?", (space.id,)).fetchone()[0]
            ids = np.empty(n, np.int64)
            x = np.empty((n, dim), np.float32)
            filled = 0
            cur = raw.execute("SELECT image_id, vector FROM vectors WHERE space_id = ? ORDER BY image_id",
                              (space.id,))
            while rows := cur.fetchmany(8192):
                if filled + len(rows) > len(ids):  # a writer added rows since the count
                    grow = max(len(rows), len(ids) // 4)
                    ids = np.resize(ids, len(ids) + grow)
                    x = np.resize(x, (len(x) + grow, dim))
                blob = b"".join(r[1] for r in rows)
                if len(blob) != width * len(rows):
                    raise VecstoreError(f"space {space.name!r} holds vectors of the wrong length "
                                        f"(expected {dim} float32); run `vecstore check`")
                ids[filled : filled + len(rows)] = [r[0] for r in rows]
                x[filled : filled + len(rows)] = np.frombuffer(blob, np.float32).reshape(len(rows), dim)
                filled += len(rows)
        return ids[:filled], x[:filled]

    def _index_path(self, space: Space) -> Path:
        return self.index_dir / f"{space.name}.faiss"

    def _watch_conn(self) -> sqlite3.Connection:
        """A plain sqlite3 connection of our own, for PRAGMA data_version and hot-path reads."""
        if self._watch is None:
            self._watch = sqlite3.connect(self.db_path, check_same_thread=False)
        return self._watch

    def _data_version(self) -> int:
        """SQLite's PRAGMA data_version on the watch connection: it changes whenever any
        other connection commits, so a cached index is trusted without listing its ids."""
        return self._watch_conn().execute("PRAGMA data_version").fetchone()[0]

    def _raw_read(self, sql: str, params: Sequence[Any]) -> list[tuple]:
        """A read on the watch connection, no ORM: the hot path of a single query."""
        return self._watch_conn().execute(sql, params).fetchall()

    def _index_plan(self, space: Space, n: int) -> tuple[str, str]:
        if space.index_factory:
            return space.index_factory, "chosen with --index"
        plan = choose_index(n, space.dim, space.memory_budget)
        return plan.factory, plan.why

    def _wants_rebuild(self, space: Space, idx: SpaceIndex, n: int) -> bool:
        """The built index no longer fits the space: another factory was asked for, or the
        automatic choice changed family (exact <-> IVF), or its IVF lists were trained for a
        size 4x away from the present one."""
        if space.index_factory:
            return space.index_factory != idx.factory
        plan = choose_index(n, space.dim, space.memory_budget)
        if plan.factory == idx.factory or (idx.exact and plan.exact):
            return False
        built_n = (space.index_stats or {}).get("n") or 0
        return idx.exact != plan.exact or not (built_n / 4 <= n <= built_n * 4)

    def build_index(self, space: Space, *, progress: bool = False) -> SpaceIndex:
        """Build the space's index from the database (the factory from ``_index_plan``), tune
        its search parameters to recall@10 >= 0.95 on a sample, record what was built."""
        t0 = time.perf_counter()
        ids, x = self.vectors(space)
        normalize(x, inplace=True)
        factory, why = self._index_plan(space, len(ids))
        try:
            idx = SpaceIndex.empty(space.dim, factory)
        except ValueError as exc:
            raise BadInput(f"{exc}; see https://github.com/facebookresearch/faiss/wiki/The-index-factory") from None
        if not idx.index.is_trained:
            ivf_lists = getattr(idx.index, "nlist", 0)
            if len(ids) < max(ivf_lists, 256):
                raise BadInput(f"index {factory} needs at least {max(ivf_lists, 256)} vectors to train; "
                               f"space {space.name!r} has {len(ids)}. Use `--index Flat` or fewer lists")
            rng = np.random.default_rng(0)
            sample = x[np.sort(rng.choice(len(x), size=min(len(x), max(40 * ivf_lists, 20000)), replace=False))]
            idx.train(sample)
            del sample
        bar = _progress(len(ids), f"index {space.name}", progress)
        for start in range(0, len(ids), 65536):
            idx.add(ids[start : start + 65536], x[start : start + 65536])
            bar.update(min(65536, len(ids) - start))
        bar.close()
        tuned = idx.tune(x, ids)
        stats = {"factory": factory, "why": why, "exact": idx.exact, "n": len(ids), **tuned,
                 "seconds": round(time.perf_counter() - t0, 2), "built_at": utcnow().isoformat()}
        if self.write:
            with self.session() as s:
                row = s.get(Space, space.id)
                row.index_type, row.index_stats = factory, stats
                s.commit()
        space.index_type, space.index_stats = factory, stats
        self._indexes[space.name] = idx
        return idx

    def _load_index(self, space: Space, *, progress: bool = False) -> SpaceIndex:
        """The space's index, caught up with the database (the file is only a cache)."""
        version = self._data_version()
        idx = self._indexes.get(space.name)
        if idx is not None and self._index_versions.get(space.name) == version:
            return idx
        if idx is None:
            idx = SpaceIndex.load(self._index_path(space), space.dim)
            if idx is not None and space.index_stats:
                idx.set_params(space.index_stats.get("params") or {})
        db_ids = self.vector_ids(space)
        if idx is None or self._wants_rebuild(space, idx, len(db_ids)):
            idx = self.build_index(space, progress=progress)
        else:
            try:
                idx.sync(db_ids, lambda ids: self.vectors(space, ids)[1])
            except RebuildNeeded:
                idx = self.build_index(space, progress=progress)
        self._indexes[space.name] = idx
        self._index_versions[space.name] = version
        return idx

    def _save_index(self, space: Space, idx: SpaceIndex) -> None:
        if not self.write:
            return
        if self._wants_rebuild(space, idx, len(idx)):  # e.g. a first ingest made it large
            idx = self.build_index(space)
        if idx.dirty or not self._index_path(space).exists():
            idx.save(self._index_path(space), {"space": space.name, "saved_at": utcnow().isoformat()})

    def reindex(self, spaces: Sequence[str] | None = None, *, index: str | None = None,
                memory_budget: int | None = None, progress: bool = False) -> list[dict[str, Any]]:
        """Rebuild the FAISS index of each space from the database. ``index`` (a FAISS factory
        string, "auto" to go back to the automatic choice) and ``memory_budget`` (bytes) are
        kept for the space's later builds."""
        self._require_write()
        targets = [self.get_space(n) for n in spaces] if spaces else self.spaces()
        out = []
        for sp in targets:
            if index is not None or memory_budget is not None:
                with self.session() as s:
                    row = s.get(Space, sp.id)
                    if index is not None:
                        row.index_factory = None if index == "auto" else index
                    if memory_budget is not None:
                        row.memory_budget = memory_budget
                    s.commit()
                    sp = row
            idx = self.build_index(sp, progress=progress)
            self._save_index(sp, idx)
            out.append({"space": sp.name, "vectors": len(idx), **(sp.index_stats or {})})
        return out

    def neighbours(self, space: str | None, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """k nearest neighbours of every image of a space, itself left out.

        Returns (ids, neighbour ids, similarities), the last two of shape (n, k); -1 pads
        when the space has k images or fewer.
        """
        from .graph import knn_search

        ids, vecs = self.vectors(self.get_space(space))
        sims, rows = knn_search(normalize(vecs, inplace=True), k)
        return ids, np.where(rows >= 0, ids[rows], -1), sims

    # ---- queries ------------------------------------------------------------------------------
    def image_by_path(self, path: str) -> Image | None:
        with self.session() as s:
            row = s.scalar(select(ImagePath).where(ImagePath.path == os.path.abspath(path)))
            return s.get(Image, row.image_id) if row else None

    def query(
        self,
        *,
        path: str | None = None,
        image_id: int | None = None,
        space: str | None = None,
        k: int = 10,
        device: str = "auto",
    ) -> QueryResult:
        """The k most similar images to a stored image (by id or path) or to an outside file."""
        if (path is None) == (image_id is None):
            raise BadInput("give either an image path or --id, not both")
        if k < 1:
            raise BadInput("-k must be at least 1")
        sp = self.get_space(space)
        query_id: int | None = None
        if image_id is not None:
            if self._raw_read("SELECT 1 FROM images WHERE id = ?", (image_id,)) == []:
                raise UnknownImage(f"no image with id {image_id} in this store (see `vecstore info`)")
            query_id = image_id
            desc = f"id {image_id}"
        else:
            assert path is not None
            if not os.path.exists(path):
                raise BadInput(f"query image not found: {path}")
            img_row = self.image_by_path(path)
            if img_row is None:  # same bytes under another path count as the same image
                try:
                    with open(path, "rb") as f:
                        sha = sha256_bytes(f.read())
                except OSError as exc:
                    raise BadInput(f"cannot read query image {path}: {exc.strerror or exc}") from exc
                with self.session() as s:
                    img_row = s.scalar(select(Image).where(Image.sha256 == sha))
            if img_row is not None and img_row.status == "ok":
                query_id = img_row.id
            desc = os.path.abspath(path)
        if query_id is not None:
            blob = self._raw_read("SELECT vector FROM vectors WHERE space_id = ? AND image_id = ?", (sp.id, query_id))
            if not blob:
                raise UnknownImage(
                    f"image {query_id} has no vector in space {sp.name!r} "
                    f"(failed or not embedded yet: `vecstore embed --space {sp.name}`)"
                )
            qv = _vectors_from_blobs([blob[0][0]], sp.dim)
        else:
            emb = self._embedder_for(sp.name, None, device, None, 0)
            try:
                qv = emb.embed_image(open_image(path))[None, :]
            except EmbedError as exc:
                raise BadInput(f"cannot use {path} as a query: {exc}") from exc
        idx = self._load_index(sp)
        sims, ids = idx.search(qv, k + (1 if query_id is not None else 0))
        hits_raw = [(int(i), float(d)) for i, d in zip(ids[0], sims[0]) if i >= 0 and i != query_id][:k]
        found = {i: (p, lab) for i, p, lab in self._raw_read(
            "SELECT i.id, i.path, l.label FROM images i LEFT JOIN labels l ON l.image_id = i.id "
            f"WHERE i.id IN ({','.join('?' * len(hits_raw))})", [h[0] for h in hits_raw])}
        paths = {i: v[0] for i, v in found.items()}
        labels = {i: v[1] for i, v in found.items() if v[1] is not None}
        hits = [
            Hit(rank=r + 1, id=i, path=paths.get(i, "?"), similarity=sim, label=labels.get(i))
            for r, (i, sim) in enumerate(hits_raw)
        ]
        return QueryResult(sp.name, sp.weights, sp.weights_random, desc, query_id, hits)

    # ---- info, check ---------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        with self.session() as s:
            n_ok = s.scalar(select(func.count()).select_from(Image).where(Image.status == "ok"))
            n_failed = s.scalar(select(func.count()).select_from(Image).where(Image.status == "failed"))
            n_paths = s.scalar(select(func.count()).select_from(ImagePath))
            per_space = dict(s.execute(select(Vector.space_id, func.count()).group_by(Vector.space_id)).all())
            labels = [
                {"label": lab, "source": src, "count": n}
                for lab, src, n in s.execute(
                    select(Label.label, Label.source, func.count())
                    .group_by(Label.label, Label.source)
                    .order_by(Label.label, Label.source)
                )
            ]
        spaces = []
        for sp in self.spaces():
            idx_path = self._index_path(sp)
            spaces.append(
                {
                    "name": sp.name,
                    "model": sp.model,
                    "layer": sp.layer,
                    "dim": sp.dim,
                    "vectors": per_space.get(sp.id, 0),
                    "weights": sp.weights,
                    "weights_random": sp.weights_random,
                    "preprocessing": sp.preprocessing,
                    "index_type": sp.index_type,
                    "index_setting": sp.index_factory or "auto",
                    "memory_budget": sp.memory_budget,
                    "index_params": (sp.index_stats or {}).get("params"),
                    "index_recall_at_10": (sp.index_stats or {}).get("recall"),
                    "index_recall_sample": (sp.index_stats or {}).get("sample"),
                    "index_built_for": (sp.index_stats or {}).get("n"),
                    "index_file": str(idx_path) if idx_path.exists() else None,
                }
            )
        return {
            "store": str(self.path.resolve()),
            "schema_version": current_revision(self.engine),
            "vecstore_version": __version__,
            "images": n_ok,
            "failed": n_failed,
            "paths": n_paths,
            "spaces": spaces,
            "labels": labels,
        }

    def failures(self) -> list[tuple[str, str]]:
        with self.session() as s:
            return [
                (p, e or "")
                for p, e in s.execute(
                    select(Image.path, Image.error).where(Image.status == "failed").order_by(Image.path)
                )
            ]

    def check(self) -> CheckReport:
        """Compare the database with the FAISS indexes and the files on disk."""
        rep = CheckReport()
        with self.session() as s:
            integrity = s.execute(text("PRAGMA integrity_check")).scalar()
            if integrity != "ok":
                rep.problems.append(f"SQLite integrity check failed: {integrity}")
            fk = s.execute(text("PRAGMA foreign_key_check")).all()
            if fk:
                rep.problems.append(f"{len(fk)} rows break foreign keys (first: {tuple(fk[0])})")
            missing_files, missing_imported = [], 0
            for p, sha, status in s.execute(select(ImagePath.path, Image.sha256, Image.status)
                                            .join(Image, Image.id == ImagePath.image_id)):
                if not os.path.exists(p):
                    if sha is None and status == "ok":
                        missing_imported += 1  # vectors imported from elsewhere: files need not be here
                    else:
                        missing_files.append(p)
            n_ok = s.scalar(select(func.count()).select_from(Image).where(Image.status == "ok"))
            n_failed = s.scalar(select(func.count()).select_from(Image).where(Image.status == "failed"))
        if missing_imported:
            rep.notes.append(f"{missing_imported} images known only by their imported vectors are not on "
                             "this machine (queries by id work; thumbnails and re-embedding need the files)")
        if missing_files:
            shown = ", ".join(missing_files[:5]) + (" ..." if len(missing_files) > 5 else "")
            rep.problems.append(f"{len(missing_files)} files missing on disk: {shown}")
        if n_failed:
            rep.notes.append(f"{n_failed} files recorded as failed (see `vecstore info --failed`)")
        for sp in self.spaces():
            with self.session() as s:
                bad = s.scalar(
                    select(func.count()).select_from(Vector).where(
                        Vector.space_id == sp.id, func.length(Vector.vector) != sp.dim * 4
                    )
                )
                n_vec = s.scalar(select(func.count()).select_from(Vector).where(Vector.space_id == sp.id))
            if bad:
                rep.problems.append(f"space {sp.name}: {bad} vectors of the wrong length (expected {sp.dim} float32)")
            if n_vec < n_ok:
                rep.warnings.append(
                    f"space {sp.name}: {n_ok - n_vec} images not embedded yet "
                    f"(`vecstore embed --space {sp.name}`)"
                )
            path = self._index_path(sp)
            db_ids = self.vector_ids(sp)
            if not path.exists():
                rep.warnings.append(
                    f"space {sp.name}: no index file; it is built from the database on next use "
                    "(or `vecstore reindex`)"
                )
                continue
            idx = SpaceIndex.load(path, sp.dim)
            if idx is None:
                rep.problems.append(
                    f"space {sp.name}: index file {path} is unreadable or of another dimension; "
                    "run `vecstore reindex`"
                )
                continue
            st = idx.state(db_ids)
            if st.orphans:
                rep.problems.append(
                    f"space {sp.name}: index holds {st.orphans} ids the database does not have; "
                    "run `vecstore reindex`"
                )
            if st.missing:
                rep.warnings.append(
                    f"space {sp.name}: index is {st.missing} vectors behind the database (a cache: "
                    "caught up on next use, or `vecstore reindex`)"
                )
            if not st.orphans and not st.missing:
                rep.notes.append(f"space {sp.name}: index and database agree on {len(db_ids)} ids")
        return rep

    # ---- runs ---------------------------------------------------------------------------------
    def _start_run(self, kind: str, space: str | None, params: dict[str, Any]) -> int:
        with self.session() as s:
            run = Run(kind=kind, space=space, params=params, stats={}, code_version=__version__)
            s.add(run)
            s.commit()
            return run.id

    def _finish_run(self, run_id: int, stats: dict[str, Any], status: str = "done") -> None:
        with self.session() as s:
            run = s.get(Run, run_id)
            assert run is not None
            run.stats, run.status = stats, status
            run.finished_at = datetime.now(timezone.utc)
            started = run.started_at if run.started_at.tzinfo else run.started_at.replace(tzinfo=timezone.utc)
            run.seconds = (run.finished_at - started).total_seconds()
            s.commit()


# --------------------------------------------------------------------------------------------
# metadata CSV
# --------------------------------------------------------------------------------------------


def _read_metadata_csv(path: str | os.PathLike[str]) -> tuple[str, dict[str, dict[str, Any]]]:
    """(key kind 'path' or 'name', key -> {column: value}) from a metadata CSV."""
    df = read_user_csv(path, "metadata")
    cols = {str(c).strip().lower(): c for c in df.columns}
    key_col = next((cols[k] for k in METADATA_KEYS if k in cols), None)
    if key_col is None:
        raise BadInput(
            f"metadata CSV {path} needs a column naming the image, one of "
            f"{', '.join(METADATA_KEYS)}; it has: {', '.join(map(str, df.columns))}"
        )
    if len(df.columns) < 2:
        raise BadInput(f"metadata CSV {path} has no column besides {key_col!r}")
    keys = df[key_col].str.strip()
    if (keys == "").any():
        raise BadInput(f"metadata CSV {path}: {(keys == '').sum()} rows have an empty {key_col!r}")
    dup = keys[keys.duplicated()].unique()
    if len(dup):
        raise BadInput(f"metadata CSV {path}: {key_col!r} repeats {', '.join(dup[:5])}")
    values = df.drop(columns=[key_col]).to_dict(orient="records")
    kind = "path" if key_col.strip().lower() == "path" else "name"
    return kind, dict(zip(keys, values))


__all__ = [
    "Store", "IngestReport", "QueryResult", "Hit", "CheckReport", "SpaceEmbedStats",
    "resolve_store_path",
]
