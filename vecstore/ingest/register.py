"""Phase 1 of an ingest: one image row per distinct content, one path row per file, and the
descriptor vectors of new images, written chunk by chunk (a chunk's rows land together or
not at all, so a killed ingest leaves a consistent store and the next run resumes)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from .. import dicom
from ..db.images import ChunkWrite
from ..db.labels import Carry
from ..embedders import is_cnn
from ..embedders.classic import CLASSIC
from ..embedders.prepare import Prepared, prepare_image
from ..params import FileLimits
from ..progress import progress_bar
from ..results import IngestReport
from .decode import Decoded, read_and_decode, scan_pool
from .scan import Found, walk_images

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy import Row
    from sqlalchemy.orm import Session

    from ..db import Database
    from ..embedders import Embedder

COMMIT_EVERY = 256  # files per transaction


@dataclass
class _Seen:
    """An image met earlier in this chunk or in the store: id, hash, status, path."""

    id: int
    sha256: str | None
    status: str
    path: str


def _size(res: Decoded) -> int | None:
    """The bytes read, or the size the scan saw when the file could not be read."""
    return res.size if res.size is not None else res.found.size


def register_files(
    db: Database,
    root: str,
    report: IngestReport,
    embedders: Sequence[Embedder],
    who: str,
    progress: bool,
    limits: FileLimits,
    check: Callable[[list[str]], None] = lambda paths: None,
    frames: str = "middle",
) -> dict[str, int]:
    """Register every image file under ``root`` (what is read as an image: ``limits``; of a
    multi-frame DICOM file, the middle frame or with ``frames`` "all" each frame, under its
    frame path); returns path -> image id for every usable image found. Known files no
    longer there are counted, never dropped; what the scan leaves out is reported. ``check``
    sees the paths found before anything is written (it raises to stop the ingest)."""
    found = list(walk_images(root, limits.follow_links, report.skipped.append))
    check([f.path for f in found])
    report.scanned = len(found)
    files = {f.path for f in found}
    gone = (p for p in db.images.paths_under(root) if dicom.file_of(p) not in files)
    report.missing = sorted(gone)
    reg = _Registrar(db, report, embedders, who, limits, frames, total=len(found))
    bar = progress_bar(len(found), "scan", progress)
    step = reg.chunk_size
    with scan_pool(len(found), reg.pool_workers) as pool:
        readings = (reg.read(found[i : i + step], pool) for i in range(0, len(found), step))
        for reading in _one_ahead(readings):  # the next chunk is read while this one is written
            reg.write(reading)
            bar.update(len(reading.chunk))
    bar.close()
    return reg.path_to_image


def _one_ahead(items: Iterator[_Reading]) -> Iterator[_Reading]:
    """Each item of ``items`` once the next one has been drawn (started)."""
    ahead: _Reading | None = None
    for item in items:
        if ahead is not None:
            yield ahead
        ahead = item
    if ahead is not None:
        yield ahead


@dataclass
class _Reading:
    """A chunk being read: its files, their known path rows, and the results to come."""

    chunk: Sequence[Found]
    known: dict[str, Row]
    results: Iterator[list[Decoded]]


def _frames_by_file(known: dict[str, Row]) -> dict[str, list[Row]]:
    """file -> the known rows of its frames (vecstore.dicom.frame_path), grouped once."""
    out: dict[str, list[Row]] = {}
    for path, k in known.items():
        file, number = dicom.split_frame(path)
        if number is not None:
            out.setdefault(file, []).append(k)
    return out


def _imported_only(k: Row | None) -> bool:
    """A known path whose image came from import-vectors and was never read here."""
    return k is not None and k.sha256 is None and k.status == "ok"


class _Registrar:
    """Registers the files of one ingest, chunk by chunk: the space ids and descriptor
    functions, the next image id, and path -> image id of the usable files found."""

    def __init__(
        self,
        db: Database,
        report: IngestReport,
        embedders: Sequence[Embedder],
        who: str,
        limits: FileLimits,
        frames: str = "middle",
        total: int = 0,
    ) -> None:
        self.who = who  # who the labels carried to changed files are recorded for
        self.db = db
        self.report = report
        # Descriptors and the CNN input are made from the decode that validates the file, so
        # a new file is read and decoded once; the CNNs embed each chunk's new images before
        # it commits. Phase 2 embeds whatever is left (images from earlier runs, failures).
        self.space_ids: dict[str, int] = {}
        features: dict[str, Callable] = {}
        with db.session() as s:
            for emb in embedders:
                self.space_ids[emb.info.name] = db.spaces.ensure(s, emb.info).id
                if not is_cnn(emb.info.name):
                    features[emb.info.name] = CLASSIC[emb.info.name][0]  # picklable function
            s.commit()
        self.cnns = [e for e in embedders if is_cnn(e.info.name)]  # one ingest: one `where`
        prepare = partial(prepare_image, where=self.cnns[0].where) if self.cnns else None
        # the CNNs' decoding workers read the files (the main process runs the network), a
        # CNN batch per chunk: the first vectors land early, a crash loses one batch
        self.pool_workers = max((c.workers for c in self.cnns), default=None)
        self.chunk_size = min([COMMIT_EVERY, *(c.batch_size for c in self.cnns)])
        self.to_embed: list[tuple[int, Prepared]] = []  # the chunk's new images, for the CNNs
        self.total = total  # files in the ingest: the CNNs' job, of which a chunk is a batch
        self.work = partial(
            read_and_decode, features=features, limits=limits, frames=frames, prepare=prepare
        )
        self.frames = frames
        self.next_id = db.images.next_id()
        self.path_to_image: dict[str, int] = {}

    def read(self, chunk: Sequence[Found], pool: Executor) -> _Reading:
        """Start reading the files of a chunk that changed since they were recorded."""
        with self.db.session() as s:
            known = self._known(s, chunk)
        frames = _frames_by_file(known) if self.frames == "all" else {}
        # a file's known rows: its path's, else (reading every frame) its frames'
        todo = [
            f
            for f in chunk
            if not self._unchanged(
                f, [known[f.path]] if f.path in known else frames.get(f.path, [])
            )
        ]
        results = pool.map(self.work, todo, chunksize=max(1, len(todo) // 32)) if todo else []
        return _Reading(chunk, known, iter(results))

    def write(self, reading: _Reading) -> None:
        """Place what a chunk's reading gave: rows, paths, labels carried, vectors (the CNN
        spaces' too), committed together."""
        results = [res for file_results in reading.results for res in file_results]
        if not results:
            return
        with self.db.session() as s:
            shas = [r.sha256 for r in results if r.sha256]
            by_sha = {
                sha: _Seen(r.id, r.sha256, r.status, r.path)
                for sha, r in self.db.images.by_shas(s, shas).items()
            }
            w = ChunkWrite()
            for res in results:
                self._place(res, reading.known.get(res.found.path), by_sha, w)
            self.db.images.write_chunk(s, w)
            source = f"ingest run {self.report.run_id}"
            self.report.labels_carried += self.db.labels.carry(s, w.carry, self.who, source)
            self.db.images.drop_pathless(s, w.left)
            self._embed_new(s)
            s.commit()  # rows, paths and vectors of a chunk land together or not at all

    def _embed_new(self, s: Session) -> None:
        """The CNN vectors of the chunk's new images, from the inputs the scan made; an image
        a CNN cannot embed here is left to phase 2, which records why."""
        todo, self.to_embed = self.to_embed, []
        for cnn in self.cnns:
            space_id = self.space_ids[cnn.info.name]
            have = self.db.vectors.having(s, space_id, [i for i, _ in todo])
            new = [t for t in todo if t[0] not in have]
            for ids, vecs, _ in cnn.embed_prepared(new, total=self.total):
                self.db.vectors.add(s, space_id, ids, vecs)
                name = cnn.info.name
                self.report.scan_vectors[name] = self.report.scan_vectors.get(name, 0) + len(ids)

    def _known(self, s: Session, chunk: Sequence[Found]) -> dict[str, Row]:
        """The known path rows of the chunk's files (and, reading every frame, of their
        frames)."""
        known = self.db.images.known_paths(s, [f.path for f in chunk])
        if self.frames == "all":
            marks = [f.path + dicom.FRAME_MARK for f in chunk]
            known.update(self.db.images.known_paths_starting(s, marks))
        return known

    def _unchanged(self, f: Found, rows: list[Row]) -> bool:
        """Same size and mtime as recorded, usable, and readable last time (each of its
        frames' rows, for a file read frame by frame): not read again."""
        now = (f.size, f.mtime_ns, "ok", None)
        same = rows and all((k.size, k.mtime_ns, k.status, k.problem) == now for k in rows)
        if same and f.error is None:
            self.report.unchanged += 1
            self.path_to_image.update({k.path: k.image_id for k in rows})
            return True
        return False

    def _place(self, res: Decoded, k: Row | None, by_sha: dict[str, _Seen], w: ChunkWrite) -> None:
        """Decide what one file read in this chunk becomes, into ``w``."""
        f, sha, error = res.found, res.sha256, res.error
        if error is not None and k is not None and k.status == "ok":
            # missing, empty, unreadable for now (a copy in progress, a share unmounted):
            # the image, its vectors and labels stay; the next ingest tries the file again
            w.problems.append((k.path_id, error))
            self.report.unavailable.append((f.path, error))
            return
        if error is not None:
            self.report.failed.append((f.path, error))
        if sha is None and k is not None and k.sha256 is None:
            w.errors.append((k.image_id, error))  # still unreadable: refresh the reason
            return
        hit = by_sha.get(sha) if sha else None
        if hit is None and error is None and _imported_only(k):
            self._adopt(res, k, by_sha, w)
            return
        iid = self._image_of(res, k, hit, by_sha, w)
        if error is None:
            self.path_to_image[f.path] = iid
            if res.metadata:
                w.metadata[iid] = {**w.metadata.get(iid, {}), **res.metadata}
        self._path_row(res, k, iid, w)

    def _adopt(self, res: Decoded, k: Row, by_sha: dict[str, _Seen], w: ChunkWrite) -> None:
        """An image known from import-vectors, read for the first time: same image id (its
        imported vectors stay), now with its content hash and descriptors."""
        f = res.found
        w.adopted.append(
            {
                "id": k.image_id,
                "sha256": res.sha256,
                "size": _size(res),
                "width": res.width,
                "height": res.height,
                "mode": res.mode,
                "pixels_sha256": res.pixels_sha256,
            }
        )
        by_sha[res.sha256] = _Seen(k.image_id, res.sha256, "ok", f.path)
        self.path_to_image[f.path] = k.image_id
        if res.metadata:
            w.metadata[k.image_id] = res.metadata
        w.path_updates.append(
            {"b_id": k.path_id, "b_image_id": k.image_id, "b_size": f.size, "b_mtime": f.mtime_ns}
        )
        self.report.added += 1
        self._vectors(res, k.image_id, w)

    def _image_of(
        self,
        res: Decoded,
        k: Row | None,
        hit: _Seen | None,
        by_sha: dict[str, _Seen],
        w: ChunkWrite,
    ) -> int:
        """The image id of a file's content: the one with the same bytes, else a new one."""
        f, error = res.found, res.error
        if hit is not None:
            if error is None and hit.status == "failed":
                self._revive(res, hit, w)
            elif error is None and hit.status == "ok" and (k is None or k.image_id != hit.id):
                self.report.duplicates.append((f.path, hit.path))
            return hit.id
        iid, self.next_id = self.next_id, self.next_id + 1
        status = "ok" if error is None else "failed"
        w.new_images.append(
            {
                "id": iid,
                "sha256": res.sha256,
                "path": f.path,
                "size": _size(res),
                "width": res.width,
                "height": res.height,
                "mode": res.mode,
                "status": status,
                "error": error,
                "pixels_sha256": res.pixels_sha256,
            }
        )
        if res.sha256:  # later files of this chunk with the same bytes are duplicates
            by_sha[res.sha256] = _Seen(iid, res.sha256, status, f.path)
        if error is None:
            self.report.added += 1
            self._vectors(res, iid, w)
        return iid

    def _path_row(self, res: Decoded, k: Row | None, iid: int, w: ChunkWrite) -> None:
        """The file's path row: new, or pointed at ``iid`` (its old image may now be gone)."""
        f, ok = res.found, res.error is None
        if k is None:
            w.new_paths.append(
                {"image_id": iid, "path": f.path, "size": f.size, "mtime_ns": f.mtime_ns}
            )
            return
        w.path_updates.append(
            {"b_id": k.path_id, "b_image_id": iid, "b_size": f.size, "b_mtime": f.mtime_ns}
        )
        if k.image_id == iid:
            if ok:
                self.report.unchanged += 1  # touched, same bytes
            return
        w.left.append(k.image_id)
        if ok and k.status == "ok":
            self.report.changed += 1
            same = res.pixels_sha256 is not None and res.pixels_sha256 == k.pixels_sha256
            w.carry.append(Carry(k.image_id, iid, f.path, same))

    def _revive(self, res: Decoded, hit: _Seen, w: ChunkWrite) -> None:
        """A content recorded as failed reads fine now (a file restored): usable again."""
        w.revived.append(
            {
                "id": hit.id,
                "status": "ok",
                "error": None,
                "size": _size(res),
                "width": res.width,
                "height": res.height,
                "mode": res.mode,
                "pixels_sha256": res.pixels_sha256,
            }
        )
        hit.status = "ok"
        self.report.added += 1
        self._vectors(res, hit.id, w)

    def _vectors(self, res: Decoded, image_id: int, w: ChunkWrite) -> None:
        if res.cnn_input is not None:
            self.to_embed.append((image_id, res.cnn_input))
        for name, v in res.features.items():
            w.new_vectors.append(
                {
                    "image_id": image_id,
                    "space_id": self.space_ids[name],
                    "vector": np.asarray(v, np.float32).tobytes(),
                }
            )
            self.report.scan_vectors[name] = self.report.scan_vectors.get(name, 0) + 1
