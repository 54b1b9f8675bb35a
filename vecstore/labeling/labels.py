"""Expert labels: set, remove, import from CSV (all rows or none), ground truth for scoring,
and the counts per label and source (with the latest pseudo-labels)."""

from __future__ import annotations

import os
import re
from collections import Counter
from typing import TYPE_CHECKING

from ..errors import BadInput, UnknownImage
from ..files import read_user_csv, sha256_file
from ..results import LabelChange, LabelCount, LabelImport
from .export import export_rows, review_rules

if TYPE_CHECKING:  # pragma: no cover
    from ..db import Database
    from ..db.models import Image

SHA_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_PROBLEMS_SHOWN = 10

CsvRows = list[tuple[int, str, str]]  # (line in the file, key, label)


def resolve_image(db: Database, target: str) -> int:
    """An image id from a path (or identical bytes), a sha256 or an id number."""
    if os.path.exists(target):
        img = db.images.by_path(target) or db.images.by_sha(sha256_file(target))
        if img is not None:
            return img.id
        raise UnknownImage(f"{target} is not in the store (ingest its folder first)")
    if SHA_RE.match(target.lower()):
        img = db.images.by_sha(target.lower())
        if img is not None:
            return img.id
    if target.isdigit() and db.images.get(int(target)) is not None:
        return int(target)
    raise UnknownImage(f"no image {target!r} in the store (give a path, a sha256 or an id)")


def classes(db: Database) -> list[str]:
    """The classes of the store: its distinct expert labels, sorted."""
    return sorted(set(db.labels.all().values()))


def check_new_classes(db: Database, labels: set[str], allow_new: bool) -> None:
    """Refuse labels that are not yet a class of a store that has classes (a typo?)."""
    known = set(classes(db))
    new = sorted(labels - known)
    if known and new and not allow_new:
        raise BadInput(
            f"unknown label(s) {', '.join(map(repr, new))}: this store's classes are "
            f"{', '.join(map(repr, sorted(known)))}. Fix the spelling, or pass --new-class "
            "to add a class."
        )


def set_label(
    db: Database,
    target: str,
    label: str,
    *,
    replace: bool = False,
    new_class: bool = False,
    source: str = "cli",
) -> LabelChange:
    """Set the expert label of one image."""
    label = label.strip()
    if not label:
        raise BadInput("the label is empty")
    iid = resolve_image(db, target)
    check_new_classes(db, {label}, new_class)
    row = db.labels.get(iid)
    if row is not None and row.label != label and not replace:
        raise BadInput(
            f"image {iid} already has the expert label {row.label!r} (from {row.source}); "
            "pass --replace to change it"
        )
    db.labels.set(iid, label, source)
    return LabelChange(iid, label, row.label if row else None)


def remove_label(db: Database, target: str) -> LabelChange:
    iid = resolve_image(db, target)
    row = db.labels.get(iid)
    if row is None:
        raise BadInput(f"image {iid} has no expert label to remove")
    db.labels.remove(iid)
    return LabelChange(iid, None, row.label)


def read_label_csv(path: str | os.PathLike[str], what: str) -> tuple[str, CsvRows]:
    """(key column kind 'path'|'sha256', rows) from a CSV with a `label` column."""
    df = read_user_csv(path, what)
    cols = {str(c).strip().lower(): c for c in df.columns}
    key = next((k for k in ("path", "sha256") if k in cols), None)
    if key is None or "label" not in cols:
        raise BadInput(
            f"{what} CSV {path} needs the columns `path` (or `sha256`) and `label`; "
            f"it has: {', '.join(map(str, df.columns)) or 'none'}"
        )
    pairs = zip(df[cols[key]], df[cols["label"]])
    return key, [(i + 2, str(k).strip(), str(v).strip()) for i, (k, v) in enumerate(pairs)]


def _find(db: Database, key: str, value: str, base: str) -> Image | None:
    """The image a CSV row names: by sha256, or by path (relative to the CSV's folder, then
    to the current one)."""
    if key == "sha256":
        return db.images.by_sha(value.lower())
    candidates = [value] if os.path.isabs(value) else [os.path.join(base, value), value]
    for cand in candidates:
        img = db.images.by_path(os.path.abspath(cand))
        if img is not None:
            return img
    return None


def resolve_rows(
    db: Database, key: str, rows: CsvRows, csv_path: str
) -> tuple[dict[int, str], list[str]]:
    """image id -> label for the rows of a label/truth CSV, and the problems found."""
    problems: list[str] = []
    resolved: dict[int, str] = {}
    first_line: dict[int, int] = {}
    base = os.path.dirname(os.path.abspath(csv_path))
    for line, k, label in rows:
        if not k:
            problems.append(f"line {line}: empty {key}")
            continue
        if not label:
            problems.append(f"line {line}: empty label for {k}")
            continue
        img = _find(db, key, k, base)
        if img is None:
            problems.append(f"line {line}: {k} is not in the store")
        elif img.status != "ok":
            problems.append(f"line {line}: {k} is recorded as a failed file ({img.error})")
        elif img.id in resolved and resolved[img.id] != label:
            problems.append(
                f"line {line}: {k} is labeled {label!r} here but {resolved[img.id]!r} on "
                f"line {first_line[img.id]} (same image)"
            )
        else:
            resolved[img.id] = label
            first_line.setdefault(img.id, line)
    return resolved, problems


def _problem_list(problems: list[str]) -> str:
    shown = "\n  ".join(problems[:MAX_PROBLEMS_SHOWN])
    more = len(problems) - MAX_PROBLEMS_SHOWN
    return shown + (f"\n  ... and {more} more" if more > 0 else "")


def import_labels(
    db: Database,
    csv_path: str | os.PathLike[str],
    *,
    replace: bool = False,
    new_class: bool = False,
) -> LabelImport:
    """Expert labels from a CSV (path or sha256, label): all rows or none."""
    key, rows = read_label_csv(csv_path, "labels")
    if not rows:
        raise BadInput(f"labels CSV {csv_path} has no rows")
    resolved, problems = resolve_rows(db, key, rows, str(csv_path))
    try:
        check_new_classes(db, set(resolved.values()), new_class)
    except BadInput as exc:
        problems.append(str(exc))
    existing = db.labels.all()
    conflicts = [i for i, lab in resolved.items() if i in existing and existing[i] != lab]
    if conflicts and not replace:
        first = conflicts[0]
        problems.append(
            f"{len(conflicts)} images already have another expert label (e.g. image "
            f"{first}: {existing[first]!r} -> {resolved[first]!r}); pass --replace to change them"
        )
    if problems:
        raise BadInput(
            f"nothing imported from {csv_path}; fix these rows first:\n  {_problem_list(problems)}"
        )
    changed = {i: lab for i, lab in resolved.items() if existing.get(i) != lab}
    db.labels.write(changed, f"csv:{os.path.basename(str(csv_path))}")
    added = sum(1 for i in changed if i not in existing)
    return LabelImport(
        added=added, replaced=len(changed) - added, unchanged=len(resolved) - len(changed)
    )


def read_truth(db: Database, csv_path: str | os.PathLike[str]) -> dict[int, str]:
    """Ground truth (path or sha256, label) for evaluation; rows must all resolve, except
    images not in the store (the others are scored)."""
    key, rows = read_label_csv(csv_path, "truth")
    resolved, problems = resolve_rows(db, key, rows, str(csv_path))
    problems = [p for p in problems if "is not in the store" not in p]
    if problems:
        raise BadInput(f"truth CSV {csv_path} has bad rows:\n  {_problem_list(problems)}")
    if not resolved:
        raise BadInput(f"no row of truth CSV {csv_path} matches an image of the store")
    return resolved


def label_counts(db: Database) -> list[LabelCount]:
    """Expert labels per label and source, and the pseudo-labels of the latest propagation."""
    rows = [LabelCount(lab, src, n) for lab, src, n in db.labels.counts()]
    run = db.runs.latest("propagate")
    if run is None:
        return rows
    table = export_rows(db, run, review_rules(db, run, None), None)
    flagged = Counter((r["label"], r["needs_review"]) for r in table if r["source"] == "propagated")
    for lab in sorted({k[0] for k in flagged}, key=str):
        n = flagged[(lab, True)] + flagged[(lab, False)]
        rows.append(
            LabelCount(lab, f"propagated (run {run.id}, {run.space})", n, flagged[(lab, True)])
        )
    return rows
