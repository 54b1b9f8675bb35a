"""The ingest of a folder, as one recorded run: register the files (phase 1, with the
descriptor vectors), take labels from folder names and metadata from a CSV, then embed in
each space what it lacks (phase 2, the CNNs). Also ``embed_spaces``: phase 2 alone, for
the images already in the store."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from ..db.labels import BatchInfo, Change
from ..params import DEFAULT_UNLABELED, FileLimits
from ..results import IngestReport, SpaceEmbedStats
from .embedding import embed_space
from .metadata import Metadata, check_unambiguous, match
from .register import register_files
from .scan import folder_label

if TYPE_CHECKING:  # pragma: no cover
    from ..db import Database
    from ..embedders import Embedder

DEFAULT_SPACE = "resnet18"  # what a new store is embedded in when no space is named


@dataclass
class IngestOptions:
    labels_from_folders: bool = False
    unlabeled_names: Sequence[str] = DEFAULT_UNLABELED
    metadata: Metadata | None = None
    progress: bool = False
    who: str = "vecstore"  # recorded with the label changes the ingest makes
    limits: FileLimits = field(default_factory=FileLimits)  # what is read as an image
    frames: str = "middle"  # of a multi-frame DICOM file: one of FRAMES
    run_params: dict[str, Any] = field(default_factory=dict)  # recorded with the run


def ingest_folder(
    db: Database,
    root: str,
    embedders: Sequence[Embedder],
    options: IngestOptions,
    written: Callable[[], None] = lambda: None,
) -> IngestReport:
    """Register every image under ``root`` and embed the new ones in each space; then call
    ``written`` (the Store catches its indexes up there), still inside the run, so that a
    failure there fails the run."""
    t0 = time.perf_counter()
    report = IngestReport(root=root)
    with db.runs.record("ingest", None, options.run_params, partial=report.to_dict) as run:
        report.run_id = run.id
        _phases(db, root, embedders, options, report)
        written()
        report.seconds = time.perf_counter() - t0
        run.stats = report.to_dict()
    return report


def _phases(
    db: Database,
    root: str,
    embedders: Sequence[Embedder],
    options: IngestOptions,
    report: IngestReport,
) -> None:
    scan_t0 = time.perf_counter()
    path_to_image = register_files(
        db,
        root,
        report,
        embedders,
        options.who,
        options.progress,
        options.limits,
        check=partial(check_unambiguous, options.metadata, root),
        frames=options.frames,
    )
    scan_seconds = time.perf_counter() - scan_t0
    if options.labels_from_folders:
        _labels_from_folders(db, root, path_to_image, options, report)
    if options.metadata is not None:
        joined = match(options.metadata, root, path_to_image)
        db.images.merge_metadata(joined.values)
        report.metadata_matched, report.metadata_unmatched = joined.pairs, joined.unmatched
    in_scan = [n for n, c in report.scan_vectors.items() if c]
    for emb in embedders:
        stats = embed_space(db, emb, options.progress)
        scanned = report.scan_vectors.get(emb.info.name, 0)
        if scanned:  # descriptor vectors made while scanning: that time is theirs too
            stats.embedded += scanned
            stats.seconds += scan_seconds
            stats.shared_with = [n for n in in_scan if n != emb.info.name]
        report.embedded.append(stats)


def _labels_from_folders(
    db: Database,
    root: str,
    path_to_image: dict[str, int],
    options: IngestOptions,
    report: IngestReport,
) -> None:
    """Each image the label of its parent folder, as one label batch; a label already
    recorded is kept and a disagreement reported."""
    existing = db.labels.all()
    new: dict[int, str] = {}
    for path, iid in path_to_image.items():
        label = folder_label(path, root, options.unlabeled_names)
        old = existing.get(iid)
        if label is None or old == label:
            continue
        if old is None:
            new[iid] = existing[iid] = label
            report.labels_added += 1
        else:
            report.label_conflicts.append((path, old, label))
    info = BatchInfo("folder", options.who, "folder", f"ingest of {root}, run {report.run_id}")
    changes = [Change(i, lab, "folder", chosen="folder") for i, lab in new.items()]
    db.labels.apply(changes, info)


def embed_spaces(
    db: Database,
    embedders: Sequence[Embedder],
    run_params: dict[str, Any],
    progress: bool,
    written: Callable[[str], None] = lambda space: None,
) -> list[SpaceEmbedStats]:
    """Embed, in each space, the images of the store it lacks; one run per space, which
    ends with ``written(space)`` (see ingest_folder)."""
    out = []
    for emb in embedders:
        with db.runs.record("embed", emb.info.name, run_params) as run:
            stats = embed_space(db, emb, progress)
            written(emb.info.name)
            run.stats = {
                "embedded": stats.embedded,
                "failed": stats.failed,
                "seconds": stats.seconds,
                "images_per_s": stats.per_second,
                "device": stats.device,
                "precision": stats.precision,
            }
        out.append(stats)
    return out
