"""What a store holds (``info``) and whether its parts agree (``check``): the database's own
integrity, its rows against the FAISS index files, and its paths against the disk."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .results import CheckReport, LabelCount, SpaceSummary, StoreInfo
from .search.index import SpaceIndex

if TYPE_CHECKING:  # pragma: no cover
    from .db import Database
    from .db.models import Space
    from .search.cache import IndexCache

SHOWN_MISSING = 5  # missing files named in a check problem


def store_info(
    db: Database, path: Path, indexes: IndexCache, version: str, *, failures: bool = False
) -> StoreInfo:
    counts = db.images.counts()
    per_space = db.spaces.vector_counts()
    return StoreInfo(
        store=str(path.resolve()),
        schema_version=db.revision(),
        vecstore_version=version,
        images=counts["ok"],
        failed=counts["failed"],
        paths=counts["paths"],
        spaces=[_summary(sp, per_space.get(sp.id, 0), indexes.path(sp)) for sp in db.spaces.all()],
        labels=[LabelCount(lab, src, n) for lab, src, n in db.labels.counts()],
        failures=db.images.failures() if failures else None,
    )


def _summary(sp: Space, vectors: int, index_file: Path) -> SpaceSummary:
    stats = sp.index_stats or {}
    return SpaceSummary(
        name=sp.name,
        model=sp.model,
        layer=sp.layer,
        dim=sp.dim,
        vectors=vectors,
        weights=sp.weights,
        weights_random=sp.weights_random,
        preprocessing=sp.preprocessing,
        index_type=sp.index_type,
        index_setting=sp.index_factory or "auto",
        memory_budget=sp.memory_budget,
        index_params=stats.get("params"),
        index_recall_at_10=stats.get("recall"),
        index_recall_sample=stats.get("sample"),
        index_built_for=stats.get("n"),
        index_file=str(index_file) if index_file.exists() else None,
    )


def check_store(db: Database, indexes: IndexCache) -> CheckReport:
    """Compare the database with the FAISS indexes and the files on disk."""
    rep = CheckReport()
    integrity, broken = db.integrity()
    if integrity != "ok":
        rep.problems.append(f"SQLite integrity check failed: {integrity}")
    if broken:
        rep.problems.append(f"{len(broken)} rows break foreign keys (first: {broken[0]})")
    _check_files(db, rep)
    counts = db.images.counts()
    if counts["failed"]:
        rep.notes.append(
            f"{counts['failed']} files recorded as failed (see `vecstore info --failed`)"
        )
    for sp in db.spaces.all():
        _check_space(db, indexes, sp, counts["ok"], rep)
    return rep


def _check_files(db: Database, rep: CheckReport) -> None:
    missing, missing_imported = [], 0
    for p, sha, status in db.images.files():
        if os.path.exists(p):
            continue
        if sha is None and status == "ok":
            missing_imported += 1  # vectors imported from elsewhere: files need not be here
        else:
            missing.append(p)
    if missing_imported:
        rep.notes.append(
            f"{missing_imported} images known only by their imported vectors are not on this "
            "machine (queries by id work; thumbnails and re-embedding need the files)"
        )
    if missing:
        shown = ", ".join(missing[:SHOWN_MISSING]) + (
            " ..." if len(missing) > SHOWN_MISSING else ""
        )
        rep.problems.append(f"{len(missing)} files missing on disk: {shown}")


def _check_space(db: Database, indexes: IndexCache, sp: Space, n_ok: int, rep: CheckReport) -> None:
    bad, n_vec = db.vectors.wrong_length(sp), db.vectors.count(sp)
    if bad:
        rep.problems.append(
            f"space {sp.name}: {bad} vectors of the wrong length (expected {sp.dim} float32)"
        )
    if n_vec < n_ok:
        rep.warnings.append(
            f"space {sp.name}: {n_ok - n_vec} images not embedded yet "
            f"(`vecstore embed --space {sp.name}`)"
        )
    path = indexes.path(sp)
    if not path.exists():
        rep.warnings.append(
            f"space {sp.name}: no index file; it is built from the database on "
            "next use (or `vecstore reindex`)"
        )
        return
    idx = SpaceIndex.load(path, sp.dim)
    if idx is None:
        rep.problems.append(
            f"space {sp.name}: index file {path} is unreadable or of another "
            "dimension; run `vecstore reindex`"
        )
        return
    db_ids = db.vectors.ids(sp)
    st = idx.state(db_ids)
    if st.orphans:
        rep.problems.append(
            f"space {sp.name}: index holds {st.orphans} ids the database does not "
            "have; run `vecstore reindex`"
        )
    if st.missing:
        rep.warnings.append(
            f"space {sp.name}: index is {st.missing} vectors behind the database "
            "(a cache: caught up on next use, or `vecstore reindex`)"
        )
    if not st.orphans and not st.missing:
        rep.notes.append(f"space {sp.name}: index and database agree on {len(db_ids)} ids")
