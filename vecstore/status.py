"""What a store holds (``info``) and whether its parts agree (``check``): the database's own
integrity, its rows against the FAISS index files, and its paths against the disk."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from . import dicom
from .labeling.labels import expert_counts
from .learn.transform import describe
from .results import CheckReport, MetadataColumn, SpaceSummary, StoreInfo
from .search.index import IndexOwner, SpaceIndex, UntrustedIndex

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
        spaces=[
            _summary(db, sp, per_space.get(sp.id, 0), indexes.path(sp)) for sp in db.spaces.all()
        ],
        labels=expert_counts(db),
        failures=db.images.failures() if failures else None,
        metadata=[
            MetadataColumn(name, n, distinct, name in dicom.IDENTIFYING)
            for name, n, distinct in db.images.metadata_columns()
        ],
    )


def _summary(db: Database, sp: Space, vectors: int, index_file: Path) -> SpaceSummary:
    stats = sp.index_stats or {}
    t = db.spaces.transform(sp.id)
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
        transform=describe(t),
        transform_kind=t.kind if t else "raw",
        precision=sp.precision,
    )


def check_store(db: Database, indexes: IndexCache) -> CheckReport:
    """Compare the database with the FAISS indexes and the files on disk. A damaged database
    file is the one problem reported: nothing else in it can be trusted."""
    rep = CheckReport()
    damage = db.integrity_problems()
    if damage:
        rep.problems.append(damaged(db.path, "; ".join(damage)))
        return rep
    broken = db.foreign_key_problems()
    if broken:
        rep.problems.append(f"{len(broken)} rows break foreign keys (first: {broken[0]})")
    _check_files(db, rep)
    _check_runs(db, rep)
    flagged = len(db.labels.review_reasons())
    if flagged:
        rep.notes.append(
            f"{flagged} expert labels need review: their file changed since they were labeled "
            "(`vecstore export` marks them needs_review; `vecstore labels history PATH`)"
        )
    counts = db.images.counts()
    if counts["failed"]:
        rep.notes.append(
            f"{counts['failed']} files recorded as failed (see `vecstore info --failed`)"
        )
    if indexes.folder_blocked():
        rep.problems.append(
            f"{indexes.folder} is a file, not the index folder: move it away (the indexes are "
            "rebuilt from the database)"
        )
    else:
        _check_stray(indexes, rep)
        for sp in db.spaces.all():
            _check_space(db, indexes, sp, counts["ok"], rep)
    return rep


def damaged(path: Path, detail: str) -> str:
    return (
        f"the database {path} is damaged ({detail}): restore a backup of it (the index files "
        "are rebuilt from it)"
    )


def _check_files(db: Database, rep: CheckReport) -> None:
    missing, missing_imported = [], 0
    for p, sha, status in db.images.files():
        if dicom.file_exists(p):  # a frame's file
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
        rep.problems.append(
            f"{len(missing)} files missing on disk: {_some(missing)}; their images, vectors "
            "and labels are kept: put the files back, or `vecstore forget PATH` to drop them"
        )


def _some(items: list[str]) -> str:
    return ", ".join(items[:SHOWN_MISSING]) + (" ..." if len(items) > SHOWN_MISSING else "")


def _check_runs(db: Database, rep: CheckReport) -> None:
    n = db.runs.count_interrupted()
    if n:
        rep.notes.append(
            f"{n} run(s) were interrupted (their process ended before they finished; "
            "`vecstore runs` lists them): nothing they wrote is half-done"
        )


def _check_stray(indexes: IndexCache, rep: CheckReport) -> None:
    stray = indexes.stray_files()
    if stray:
        rep.warnings.append(
            f"{len(stray)} stray temporary file(s) in {indexes.folder}, left by a killed "
            f"process: {_some([p.name for p in stray])}; `vecstore check --fix` removes them"
        )


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
    idx = _saved_index(db, indexes, sp, rep)
    if idx is None:
        return
    db_ids = db.vectors.ids(sp)
    st = idx.state(db_ids)
    foreign, deleted = _orphans(db, idx, db_ids)
    if foreign:
        rep.problems.append(
            f"space {sp.name}: index holds {foreign} ids the database does not "
            "have; run `vecstore reindex`"
        )
    if deleted:
        rep.warnings.append(
            f"space {sp.name}: index still holds {deleted} images deleted since it was saved "
            "(a cache: caught up on next use, or `vecstore reindex`)"
        )
    if st.missing:
        rep.warnings.append(
            f"space {sp.name}: index is {st.missing} vectors behind the database "
            "(a cache: caught up on next use, or `vecstore reindex`)"
        )
    if not st.orphans and not st.missing:
        rep.notes.append(f"space {sp.name}: index and database agree on {len(db_ids)} ids")


def _orphans(db: Database, idx: SpaceIndex, db_ids) -> tuple[int, int]:
    """(foreign, deleted) of the index's ids the database does not have. Deleted: images
    this database deleted after the index was saved (a write killed before its index save):
    the index is only behind, and their ids are never given again. Foreign: the rest, ids
    this database never gave or vectors it lost (an older backup restored beside a newer
    index, say): a new image could get such an id, so the index is not to be trusted."""
    orphans = idx.orphans(db_ids)
    deleted = db.images.deleted(orphans.tolist()) if len(orphans) else set()
    return len(orphans) - len(deleted), len(deleted)


def _saved_index(
    db: Database, indexes: IndexCache, sp: Space, rep: CheckReport
) -> SpaceIndex | None:
    """The space's saved index when it is the file saved for it; else the reason is reported."""
    path = indexes.path(sp)
    try:
        return SpaceIndex.open(path, IndexOwner.of(sp, db.spaces.transform(sp.id)))
    except FileNotFoundError:
        rep.warnings.append(
            f"space {sp.name}: no index file; it is built from the database on "
            "next use (or `vecstore reindex`)"
        )
    except UntrustedIndex as exc:
        if exc.stale:
            rep.warnings.append(
                f"space {sp.name}: index file {path} {exc}; it is rebuilt from the database "
                "on next use (or `vecstore reindex`)"
            )
        else:
            rep.problems.append(
                f"space {sp.name}: index file {path} does not match the space: {exc}; it is "
                "not used (queries rebuild it from the database): `vecstore check --fix` or "
                "`vecstore reindex` saves a new one"
            )
    return None


def repair(db: Database, indexes: IndexCache) -> list[str]:
    """What ``check --fix`` repairs, all of it caches: stray temporary files are removed, and
    an index that is unreadable, not the one saved for its space, or holding ids the database
    does not have is rebuilt from the database. Returns what was done; nothing in the
    database is changed."""
    done = []
    for stray in indexes.stray_files():
        stray.unlink(missing_ok=True)
        done.append(f"removed {stray.name}")
    for sp in db.spaces.all():
        if _needs_rebuild(db, indexes, sp):
            idx = indexes.build(sp)
            indexes.save(sp, idx)
            done.append(f"rebuilt the index of space {sp.name} from the database ({len(idx)} ids)")
    return done


def _needs_rebuild(db: Database, indexes: IndexCache, sp: Space) -> bool:
    try:
        idx = SpaceIndex.open(indexes.path(sp), IndexOwner.of(sp, db.spaces.transform(sp.id)))
    except FileNotFoundError:
        return False  # built on next use
    except UntrustedIndex:
        return True
    return _orphans(db, idx, db.vectors.ids(sp))[0] > 0
