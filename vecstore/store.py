"""The Store: the one entry point of the CLI (and of any service or notebook), and the one
place that keeps SQLite rows and FAISS ids in sync. It opens, locks, migrates and closes a
store; each verb delegates to the part that does the work.

A store is a folder::

    <store>/vecstore.db          SQLite (WAL): images, paths, spaces, vectors, labels, runs
    <store>/index/<space>.faiss  FAISS index per space, a cache rebuilt from the database
    <store>/write.lock           held (flock) by the one process that writes

Example::

    from vecstore import Store

    with Store.open("scans-store", create=True) as store:
        store.ingest("scans/", spaces=["hog"], labels_from_folders=True)
        hits = store.query(path="scans/unlabeled/x.png", k=5).hits
        store.propagate("hog")
        table = store.export_table()            # a pandas DataFrame, one row per image
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__, browse

# The workflows that pull in scipy and scikit-learn are imported by the verbs that run them,
# so that opening a store for a query stays fast.
from .browse import ReviewTable
from .db import Database
from .db.lock import WriteLock
from .db.models import Image, Run, Space
from .errors import BadInput, StoreDamaged, StoreNotFound, UnknownImage, VecstoreError
from .export_vectors import export_vectors
from .ingest.embedding import embedder_for
from .ingest.forget import forget as forget_paths
from .ingest.metadata import read_metadata_csv
from .ingest.pipeline import DEFAULT_SPACE, IngestOptions, embed_spaces, ingest_folder
from .ingest.scan import check_folder_name
from .ingest.vector_file import VectorFile
from .ingest.vectors_import import import_vectors
from .labeling import history as label_history
from .labeling import label_csv
from .labeling import labels as label_ops
from .labeling.data import space_matrix
from .labeling.export import export_file, export_table
from .labeling.transforms import AUTO as TRANSFORM_AUTO
from .labeling.transforms import auto_params, set_transform
from .learn.transform import TransformParams
from .params import (
    AUTO,
    DEFAULT_UNLABELED,
    FRAMES,
    ClusterParams,
    EmbedOptions,
    EvaluationParams,
    ExportOptions,
    FileLimits,
    PlanRequest,
    PropagationParams,
)
from .plan import make_plan
from .report import write_report
from .results import (
    CheckReport,
    Clustering,
    Evaluation,
    Export,
    Forgotten,
    IndexStats,
    IngestReport,
    LabelBatchRow,
    LabelChange,
    LabelCount,
    LabelEventRow,
    LabelImport,
    LabelUndo,
    LearningCurve,
    MethodComparison,
    Plan,
    Propagation,
    QueryResult,
    Reindexed,
    ReportFile,
    SpaceEmbedStats,
    StoreInfo,
    Suggestion,
    Transformed,
    VectorExport,
    VectorImport,
)
from .search.cache import IndexCache, with_settings
from .search.query import query as run_query
from .status import check_store, damaged, repair, store_info

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


DB_NAME = "vecstore.db"
DEFAULT_STORE = ".vecstore"
Truth = Mapping[int, str] | str | os.PathLike[str]  # image id -> label, or a CSV (path, label)


def _migrate(db: Database, lock: WriteLock) -> None:
    """Bring the schema to head; a reader takes the write lock just for this (it may not
    change the schema under a writer)."""
    if db.at_head():
        return
    if lock.held:
        db.migrate()
        return
    lock.acquire()
    try:
        db.migrate()
    finally:
        lock.release()


def _refuse_file_in_path(p: Path) -> None:
    """--store must be a folder, or a path whose existing part is a folder."""
    for part in (p, *p.parents):
        if part.exists():
            if not part.is_dir():
                what = "is a file" if part == p else f"is a file, so {p} cannot be a folder"
                raise BadInput(f"--store {p}: {part} {what}; choose another path")
            return


def check_at(path: str | os.PathLike[str], *, fix: bool = False) -> CheckReport:
    """``vecstore check``: open the store (to write when ``fix``) and compare its parts. A
    database SQLite cannot read is reported as the problem, not raised."""
    try:
        with Store.open(path, write=fix) as store:
            return store.check(fix=fix)
    except StoreDamaged as exc:
        return CheckReport(problems=[damaged(Path(path) / DB_NAME, exc.detail)])


def resolve_store_path(option: str | None) -> Path:
    """--store, then $VECSTORE_STORE, then ./.vecstore."""
    return Path(option or os.environ.get("VECSTORE_STORE") or DEFAULT_STORE).expanduser()


class Store:
    """An open store. ``Store.open(path)`` reads; ``write=True`` (or ``create=True``) takes the
    one-writer lock first. Use it as a context manager, or call ``close()``."""

    def __init__(self, path: Path, db: Database, lock: WriteLock, *, write: bool) -> None:
        self.path = path
        self.write = write
        self._db = db
        self._lock = lock
        self._indexes = IndexCache(db, path / "index", write=write)

    # ---- opening, locking ---------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        create: bool = False,
        write: bool = False,
        wait: float = 0.0,
        purpose: str = "",
    ) -> Store:
        """Open a store (creating it when ``create``); ``write`` takes the one-writer lock,
        waiting up to ``wait`` seconds for another writer to finish (StoreLocked after
        that); ``purpose``: what this writer does, told to the others it makes wait."""
        p = Path(path).expanduser()
        _refuse_file_in_path(p)
        if not (p / DB_NAME).exists():
            if not create:
                raise StoreNotFound(str(p))
            p.mkdir(parents=True, exist_ok=True)
        write = write or create
        lock, db = WriteLock(p), None
        try:
            if write:
                lock.acquire(wait=wait, purpose=purpose)
            db = Database(p / DB_NAME)
            _migrate(db, lock)
            if write:  # the one writer: a run still marked running was killed
                db.runs.mark_interrupted()
        except BaseException:
            if db is not None:
                db.close()
            lock.release()
            raise
        return cls(p, db, lock, write=write)

    def close(self) -> None:
        self._db.close()
        self._lock.release()

    @contextmanager
    def writing(self, *, wait: float = 0.0, purpose: str = "") -> Iterator[Store]:
        """This read store, made a writer for the block: the one-writer lock taken (waiting
        up to ``wait`` seconds; StoreLocked after that) and given back at its end, so that a
        long-lived reader (``vecstore serve``) holds the lock only while it writes. Not
        reentrant, and not to be entered from two threads at once. Its index cache stays a
        reader's (the queries other threads run meanwhile write nothing) and stays in step
        across the block's commits without re-checking the vectors: for writes that leave
        the vectors alone (labels, suggest), not ingest or reindex."""
        if self.write:
            raise VecstoreError("internal: this store already writes")
        self._lock.acquire(wait=wait, purpose=purpose)
        self.write = True
        try:
            with self._indexes.vectors_unchanged():
                self._db.runs.mark_interrupted()
                yield self
        finally:
            self.write = False
            self._lock.release()

    def data_version(self) -> int:
        """A number that moves whenever the database changes (any process): what was read
        at one value can be trusted until it moves."""
        return self._db.data_version()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require_write(self) -> None:
        if not self.write:
            raise VecstoreError("internal: this operation needs a store opened with write=True")

    def _truth(self, truth: Truth | None) -> dict[int, str] | None:
        """image id -> true label: given as such, or read from a CSV file."""
        if truth is None:
            return None
        if isinstance(truth, Mapping):
            return dict(truth)
        return label_csv.read_truth(self._db, truth)

    def _refresh_all(self) -> None:
        self._refresh(*[sp.name for sp in self.spaces()])

    def _refresh(self, *names: str, progress: bool = False) -> None:
        """Catch the FAISS index of each space up with the rows just written, and save it."""
        for name in names:
            self._indexes.refresh(self._db.spaces.get(name), progress=progress)

    # ---- images in ---------------------------------------------------------------------------
    def ingest(
        self,
        root: str | os.PathLike[str],
        spaces: Sequence[str] | None = None,
        *,
        labels_from_folders: bool = False,
        unlabeled_names: Iterable[str] = DEFAULT_UNLABELED,
        metadata_csv: str | os.PathLike[str] | None = None,
        embedding: EmbedOptions | None = None,
        progress: bool = False,
        who: str | None = None,
        limits: FileLimits | None = None,
        frames: str = "middle",
    ) -> IngestReport:
        """Register every image under ``root`` and embed the new ones in each space (the
        store's spaces when none are named; resnet18 for a new store). ``frames``: of a
        multi-frame DICOM file, the middle frame or "all" (each an image, under the path
        ``file#frame=N``; a file already in the store stays as it was read). A known file that is
        missing, empty or unreadable keeps its image, vectors and labels (tried again next
        time); a file whose bytes changed keeps its label (flagged when its pixels changed).
        ``embedding``: how the CNN spaces are computed (weights, device, precision...).
        ``who``: recorded with the label changes the ingest makes. ``limits``: what is read
        as an image (size, pixels, links leaving ``root``); a file beyond them fails, a link
        or a name that cannot be stored is skipped, each reported."""
        self._require_write()
        root = os.path.abspath(root)
        limits = limits or FileLimits()
        embedding = embedding or EmbedOptions()
        check_folder_name(root)
        unlabeled_names = list(unlabeled_names)  # used twice: a generator would be spent
        if not os.path.isdir(root):
            raise BadInput(f"{root} is not a folder; `vecstore ingest` takes a folder of images")
        if frames not in FRAMES:
            raise BadInput(f"frames {frames!r} is not one of {', '.join(FRAMES)}")
        names = list(dict.fromkeys(spaces or [s.name for s in self.spaces()] or [DEFAULT_SPACE]))
        # Everything that can fail on bad options fails before any file is touched.
        opts = IngestOptions(
            labels_from_folders=labels_from_folders,
            unlabeled_names=list(unlabeled_names),
            metadata=read_metadata_csv(metadata_csv) if metadata_csv else None,
            progress=progress,
            who=label_ops.who_is(who),
            frames=frames,
            run_params={
                "root": root,
                "frames": frames,
                "spaces": names,
                "labels_from_folders": labels_from_folders,
                "unlabeled_names": list(unlabeled_names),
                "metadata_csv": str(metadata_csv) if metadata_csv else None,
                **embedding.to_params(),
                "max_pixels": limits.max_pixels,
                "max_bytes": limits.max_bytes,
                "follow_links": limits.follow_links,
            },
            limits=limits,
        )
        embedders = [embedder_for(self._db, n, embedding) for n in names]
        # every space is caught up, not only those embedded: an image an ingest deletes
        # (its only file now holds other bytes) leaves every space's index
        return ingest_folder(self._db, root, embedders, opts, self._refresh_all)

    def embed(
        self,
        spaces: Sequence[str],
        *,
        embedding: EmbedOptions | None = None,
        progress: bool = False,
    ) -> list[SpaceEmbedStats]:
        """Add spaces to (or catch up spaces of) the images already in the store, computed
        as ``embedding`` says (a CNN space's precision: None keeps its recorded one)."""
        self._require_write()
        if not spaces:
            raise BadInput("name at least one space with --space")
        embedding = embedding or EmbedOptions()
        names = list(dict.fromkeys(spaces))
        embedders = [embedder_for(self._db, n, embedding) for n in names]
        params = embedding.to_params()
        return embed_spaces(self._db, embedders, params, progress, self._refresh)

    def import_vectors(
        self,
        vector_file: str | os.PathLike[str],
        space: str,
        *,
        paths: str | os.PathLike[str] | None = None,
        path_column: str = "path",
        vector_column: str = "vector",
        base: str | os.PathLike[str] | None = None,
        progress: bool = False,
    ) -> VectorImport:
        """Make precomputed embeddings a space: a .npy matrix with ``paths`` (a text file, one
        image path per line in the rows' order), or a .parquet file with a path and a vector
        column; relative paths are taken from ``base``. The file is checked whole before
        anything is written; the space's index is built and tuned at the end."""
        self._require_write()
        t0 = time.perf_counter()
        vf = VectorFile(
            Path(vector_file),
            Path(paths) if paths else None,
            path_column,
            vector_column,
            Path(base) if base else None,
        )
        result = import_vectors(self._db, vf, space, progress=progress)
        self._refresh(space, progress=progress)
        result.index = IndexStats.from_dict(self._db.spaces.get(space).index_stats)
        result.seconds = round(time.perf_counter() - t0, 2)
        return result

    # ---- spaces, vectors, indexes ------------------------------------------------------------
    def spaces(self) -> list[Space]:
        return self._db.spaces.all()

    def get_space(self, name: str | None) -> Space:
        """The named space, or the store's first space when ``name`` is None."""
        return self._db.spaces.get(name)

    def vectors(
        self, space: Space, ids: Sequence[int] | np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of a space, all of them or the given ids, in id order (raw, as
        stored: not normalised)."""
        return self._db.vectors.get(space, ids)

    def matrix(self, space: str | None) -> tuple[Space, np.ndarray, np.ndarray]:
        """(space, ids, L2-normalised vectors) of a space."""
        return space_matrix(self._db, space)

    def neighbours(self, space: str | None, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """k nearest neighbours of every image of a space, itself left out: (ids, neighbour
        ids, similarities), the last two (n, k), -1 padding when the space is smaller."""
        from .learn.graph import knn_search

        _, ids, x = self.matrix(space)
        sims, rows = knn_search(x, k)
        return ids, np.where(rows >= 0, ids[rows], -1), sims

    def reindex(
        self,
        spaces: Sequence[str] | None = None,
        *,
        index: str | None = None,
        memory_budget: int | None = None,
        progress: bool = False,
    ) -> list[Reindexed]:
        """Rebuild the FAISS index of each space from the database. ``index`` (a FAISS factory
        string, "auto" to go back to the automatic choice) and ``memory_budget`` (bytes) are
        kept for the space's later builds."""
        self._require_write()
        targets = [self.get_space(n) for n in spaces] if spaces else self.spaces()
        out = []
        for sp in targets:
            # built with the new settings first: a factory FAISS cannot build is never kept
            idx = self._indexes.build(with_settings(sp, index, memory_budget), progress=progress)
            if index is not None or memory_budget is not None:
                sp = self._db.spaces.set_index_settings(
                    sp.id, factory=index, memory_budget=memory_budget
                )
            self._indexes.save(sp, idx)
            out.append(Reindexed(sp.name, len(idx), IndexStats.from_dict(sp.index_stats)))
        return out

    def transform(
        self,
        space: str | None,
        kind: str,
        n_components: int | None = None,
        seed: int = TransformParams.seed,
    ) -> Transformed:
        """Choose what a space's vectors go through before the cosine, for queries,
        clustering and propagation alike: ``kind`` "raw" (nothing), "center" (minus their
        mean) or "pca" (whitened to ``n_components`` dims), fitted on the space's raw vectors
        now and recorded as a run; the space's index is rebuilt under it. ``kind`` "auto":
        the one of raw, centred and PCA-whitened whose labels score best out-of-fold."""
        self._require_write()
        chosen_by = None
        if kind == TRANSFORM_AUTO:
            params, chosen_by = auto_params(self._db, space, seed)
        else:
            params = TransformParams(kind, n_components, seed)
        out = set_transform(self._db, space, params, chosen_by)
        self._refresh(out.space)
        out.index = IndexStats.from_dict(self._db.spaces.get(out.space).index_stats)
        return out

    # ---- search ------------------------------------------------------------------------------
    def query(
        self,
        *,
        path: str | None = None,
        image_id: int | None = None,
        space: str | None = None,
        k: int = 10,
        device: str = "auto",
        where: Sequence[tuple[str, str]] = (),
    ) -> QueryResult:
        """The k most similar images to a stored image (by id or path) or to an outside file;
        with ``where`` ((column, value) pairs), among the images whose metadata has them."""
        return run_query(
            self._db,
            self._indexes,
            space,
            path=path,
            image_id=image_id,
            k=k,
            embedder=lambda name: embedder_for(
                self._db, name, EmbedOptions(device=device, workers=0)
            ),
            where=where,
        )

    @staticmethod
    def set_search_threads(n: int) -> None:
        """Threads FAISS gives each search, for the whole process. A service answering many
        requests at once wants 1: OpenMP makes a team of threads per calling thread, and
        dozens of spinning teams burn the cores the requests need."""
        import faiss

        faiss.omp_set_num_threads(max(1, n))

    def image_by_path(self, path: str) -> Image | None:
        return self._db.images.by_path(path)

    def image_paths(self) -> dict[int, str]:
        """image id -> path."""
        return self._db.images.paths()

    # ---- the store itself --------------------------------------------------------------------
    def info(self, *, failures: bool = False) -> StoreInfo:
        """What the store holds: images, spaces (dims, weights, index), labels, schema; with
        ``failures``, the files that failed and why."""
        return store_info(self._db, self.path, self._indexes, __version__, failures=failures)

    def check(self, *, fix: bool = False) -> CheckReport:
        """Compare the database with the FAISS indexes and the files on disk. ``fix`` first
        repairs what is only a cache: stray temporary files, index files not to be trusted."""
        fixed = []
        if fix:
            self._require_write()
            fixed = repair(self._db, self._indexes)
        rep = check_store(self._db, self._indexes)
        rep.fixed = fixed
        return rep

    def runs(self) -> list[Run]:
        return self._db.runs.all()

    def get_run(self, run_id: int, kind: str) -> Run:
        return self._db.runs.get(run_id, kind)

    # ---- labels ------------------------------------------------------------------------------
    def expert_labels(self) -> dict[int, str]:
        """image id -> expert label."""
        return self._db.labels.all()

    def classes(self) -> list[str]:
        return label_ops.classes(self._db)

    def resolve_image(self, target: str) -> int:
        """An image id from a path (or identical bytes), a sha256 or an id number."""
        return label_ops.resolve_image(self._db, target)

    def set_label(
        self,
        target: str,
        label: str,
        *,
        replace: bool = False,
        new_class: bool = False,
        source: str = "cli",
        who: str | None = None,
        chosen: str = "review",
    ) -> LabelChange:
        """Set the expert label of one image; ``who`` (default $VECSTORE_USER, else the
        login) is recorded with the change, and ``chosen``: how the image came to be labeled
        (vecstore.params.CHOSEN_GIVEN; default "review", a person looked at this one)."""
        self._require_write()
        return label_ops.set_label(
            self._db,
            target,
            label,
            replace=replace,
            new_class=new_class,
            source=source,
            who=who,
            chosen=chosen,
        )

    def remove_label(
        self, target: str, *, who: str | None = None, source: str = "cli"
    ) -> LabelChange:
        self._require_write()
        return label_ops.remove_label(self._db, target, who=who, source=source)

    def import_labels(
        self,
        csv_path: str | os.PathLike[str],
        *,
        replace: bool = False,
        new_class: bool = False,
        accept_pseudo: bool = False,
        who: str | None = None,
        chosen: str | None = None,
    ) -> LabelImport:
        """Expert labels from a CSV (path or sha256, label): all rows or none. Rows of
        vecstore's own pseudo-labels are refused unless ``accept_pseudo``. Each label
        records how its image was chosen: "suggested" for the rows of a `suggest` output
        and the images a suggest run picked, else "import" (accepted pseudo-labels
        "review"); ``chosen`` says it for the whole file instead."""
        self._require_write()
        return label_csv.import_labels(
            self._db,
            csv_path,
            replace=replace,
            new_class=new_class,
            accept_pseudo=accept_pseudo,
            who=who,
            chosen=chosen,
        )

    def forget(
        self,
        targets: Sequence[str],
        *,
        missing_only: bool = False,
        drop_labels: bool = False,
        who: str | None = None,
    ) -> Forgotten:
        """Forget files (or every known file under a folder; ``missing_only``: those not on
        disk): their paths, and images left with no path, with their vectors. Refused when
        such an image carries an expert label, unless ``drop_labels`` (then recorded as a
        label batch)."""
        self._require_write()
        out = forget_paths(
            self._db,
            targets,
            who=label_ops.who_is(who),
            missing_only=missing_only,
            drop_labels=drop_labels,
        )
        self._refresh_all()
        return out

    def undo_labels(self, batch: int | None = None, *, who: str | None = None) -> LabelUndo:
        """Undo a label batch (default: the latest not undone): its images get back exactly
        the labels they had before."""
        self._require_write()
        return label_history.undo(self._db, batch, who=who)

    def label_history(self, target: str | None = None) -> list[LabelEventRow] | list[LabelBatchRow]:
        """The label changes of one image (path, sha256 or id), or every batch."""
        if target is None:
            return label_history.batches(self._db)
        return label_history.history(self._db, target)

    def read_truth(self, csv_path: str | os.PathLike[str]) -> dict[int, str]:
        """Ground truth (path or sha256, label) for scoring; rows must all resolve."""
        return label_csv.read_truth(self._db, csv_path)

    def label_counts(self) -> list[LabelCount]:
        """Expert labels per label, source and how chosen, and the pseudo-labels of the latest
        propagation."""
        return label_ops.label_counts(self._db)

    # ---- clustering, propagation, evaluation -------------------------------------------------
    def cluster(
        self,
        space: str | None = None,
        params: ClusterParams | None = None,
        *,
        truth: Truth | None = None,
    ) -> Clustering:
        """Cluster a space, store the assignment as a run, score it against the expert labels
        (or ``truth``)."""
        from .labeling.clustering import cluster

        self._require_write()
        return cluster(self._db, space, params or ClusterParams(), self._truth(truth))

    def propagate(
        self,
        space: str | None = None,
        params: PropagationParams | None = None,
        *,
        progress: bool = False,
    ) -> Propagation:
        """Spread the expert labels of a space with ``params.method`` (``auto``: the best
        out-of-fold, see ``compare_methods``); store the pseudo-labels."""
        from .labeling.comparison import choose_method
        from .labeling.propagation import propagate

        self._require_write()
        params, chosen_by = params or PropagationParams(), None
        if params.method == AUTO:
            params, chosen_by = choose_method(self._db, space, params)
        return propagate(self._db, space, params, progress=progress, chosen_by=chosen_by)

    def compare_methods(
        self,
        space: str | None = None,
        params: EvaluationParams | None = None,
        propagation: PropagationParams | None = None,
    ) -> MethodComparison:
        """Every labeling method scored out-of-fold on the same folds of the expert labels
        (graph settings of ``propagation``, default the space's latest propagation's)."""
        from .labeling.comparison import compare_methods

        return compare_methods(self._db, space, params or EvaluationParams(), propagation)

    def evaluate(
        self,
        space: str | None = None,
        params: EvaluationParams | None = None,
        *,
        truth: Truth | None = None,
        run_id: int | None = None,
        propagation: PropagationParams | None = None,
    ) -> Evaluation:
        """Score pseudo-labels: against ``truth`` (the latest or given propagation run), or
        out-of-fold on the expert labels, spread with ``propagation`` (default: the
        parameters of the space's latest propagation)."""
        from .labeling.evaluation import evaluate

        self._require_write()
        return evaluate(
            self._db,
            space,
            params or EvaluationParams(),
            truth=self._truth(truth),
            run_id=run_id,
            propagation=propagation,
        )

    def learning_curve(
        self,
        space: str | None = None,
        *,
        truth: Truth | None = None,
        sizes: list[int] | None = None,
        repeats: int = 5,
        seed: int = 0,
        positive: str | None = None,
        propagation: PropagationParams | None = None,
    ) -> LearningCurve:
        """Accuracy (and recall of ``positive``) against the number of labels, propagated
        with ``propagation`` (default PropagationParams()) and fitted a - b m^-c; stored as
        the run that `vecstore plan` extrapolates."""
        from .labeling.curve import learning_curve

        self._require_write()
        return learning_curve(
            self._db,
            space,
            truth=self._truth(truth),
            sizes=sizes,
            repeats=repeats,
            seed=seed,
            positive=positive,
            params=propagation,
        )

    def suggest(
        self,
        n: int,
        space: str | None = None,
        *,
        seed: int = 0,
        out: str | os.PathLike[str] | None = None,
        propagation: PropagationParams | None = None,
        who: str | None = None,
    ) -> list[Suggestion]:
        """The n images whose labels would help most, with why each was picked; with
        ``out``, also written there as a CSV whose `label` column is left to fill (then
        ``import_labels`` it). Pseudo-label margins come from ``propagation`` (default
        PropagationParams()). Recorded as a run naming the images picked (their labels are
        then "suggested" whatever file brings them), so it needs a store open to write;
        ``who``: the person asking, recorded with the run."""
        from .labeling.suggestion import suggest, write_suggestions

        self._require_write()
        picks = suggest(self._db, n, space, seed=seed, params=propagation, who=who)
        if out is not None:
            write_suggestions(out, picks)
        return picks

    # ---- browsing (what `vecstore serve` shows) ------------------------------------------------
    def review_table(self, space: str | None = None) -> ReviewTable:
        """Every image with its expert label and the latest propagation's pseudo-label,
        probabilities, review flag, cluster and metadata, read at the current data version
        (page through it with ``vecstore.browse.select`` and ``review_queue``)."""
        return browse.review_table(self._db, space, self.data_version())

    def review_mark(self) -> tuple:
        """What moves when ``review_table`` would give another table (cheap to read)."""
        return browse.table_mark(self._db)

    def with_new_images(self, table: ReviewTable, mark: tuple) -> ReviewTable | None:
        """``table`` with the images added since it was read, when nothing else it shows
        changed (browse.with_new_images); None: it needs a rebuild."""
        return browse.with_new_images(self._db, table, mark)

    def image_record(self, table: ReviewTable, image_id: int) -> dict[str, Any]:
        """One image of ``table``: labels, probabilities, metadata, label history."""
        return browse.image_record(self._db, table, image_id)

    def dashboard(self, table: ReviewTable) -> dict[str, Any]:
        """The figures of ``table``'s dashboard: counts, flagged share, recall promise, curve."""
        return browse.dashboard(self._db, table)

    def propagation_params(self, space: str | None = None) -> PropagationParams:
        """The parameters (method included) of the space's latest propagation: what a
        re-run repeats (the defaults when there is none)."""
        from .labeling.crossfit import latest_params

        return latest_params(self._db, self.get_space(space).name)

    def image_file(self, image_id: int) -> str:
        """The path of a stored image's file (raises UnknownImage)."""
        img = self._db.images.get(image_id)
        if img is None:
            raise UnknownImage(f"no image with id {image_id} in this store")
        return img.path

    # ---- outputs -----------------------------------------------------------------------------
    def export_table(self, opts: ExportOptions | None = None) -> pd.DataFrame:
        """The pseudo-labels as a DataFrame, one row per image (see ``export``)."""
        return export_table(self._db, opts or ExportOptions())[0]

    def export(self, out: str | os.PathLike[str], opts: ExportOptions | None = None) -> Export:
        """Write the pseudo-labels (label, source, confidence, runner-up, cluster, review flag
        per image) as CSV, Label Studio tasks or a dataset folder (``opts.format``)."""
        return export_file(self._db, out, opts or ExportOptions())

    def export_vectors(
        self, space: str, out: str | os.PathLike[str], *, progress: bool = False
    ) -> VectorExport:
        """Write the raw vectors of ``space`` as Parquet (path, sha256, image_id, vector), one
        row per usable image with a vector there: what ``import_vectors`` reads back into
        another store."""
        return export_vectors(self._db, space, out, progress=progress)

    def report(
        self,
        out: str | os.PathLike[str],
        *,
        space: str | None = None,
        run_id: int | None = None,
        projection: str = "pca",
        seed: int = 0,
    ) -> ReportFile:
        """Write the self-contained HTML report of a space."""
        return write_report(
            self._db, out, space=space, run_id=run_id, projection=projection, seed=seed
        )

    def plan(self, request: PlanRequest) -> Plan:
        """What a labeling budget buys at a given scale, from what this store measured."""
        return make_plan(self._db, request)


__all__ = ["Store", "resolve_store_path"]
