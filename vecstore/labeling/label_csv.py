"""Labels from CSV files: expert labels imported all rows or none (one label batch), each
recording how its image was chosen (a `vecstore suggest` pick, or a row vecstore did not pick),
and the ground truth scored against."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple

from ..db.labels import BatchInfo, Change
from ..errors import BadInput
from ..files import read_user_csv
from ..results import LabelImport
from .labels import check_chosen, check_new_classes, who_is

if TYPE_CHECKING:  # pragma: no cover
    from ..db import Database
    from ..db.models import Image

MAX_PROBLEMS_SHOWN = 10
PSEUDO_SOURCES = {"propagated", "none"}  # the `source` of an export's rows that are not expert
ACCEPTED = "accepted-pseudo:"
# the columns of a `vecstore suggest` CSV (vecstore.results.SUGGESTION_COLUMNS) that no other
# file of vecstore has (an export has confidence, margin and cluster too): every row of a file
# with them was picked by vecstore
SUGGEST_ONLY = ("reason", "pseudo_label")


class CsvRow(NamedTuple):
    line: int  # in the file (the header is line 1)
    key: str  # path or sha256
    label: str
    source: str  # "" when the file has no `source` column


class LabelFile(NamedTuple):
    key: str  # the kind of the key column: "path" or "sha256"
    rows: list[CsvRow]
    suggested: bool  # a `vecstore suggest` output (it has its columns)


def read_label_csv(path: str | os.PathLike[str], what: str) -> LabelFile:
    """The rows of a CSV with a key column (path or sha256) and a `label` column (and, in
    vecstore's own exports, a `source` column)."""
    df = read_user_csv(path, what)
    cols = {str(c).strip().lower(): c for c in df.columns}
    key = next((k for k in ("path", "sha256") if k in cols), None)
    if key is None or "label" not in cols:
        raise BadInput(
            f"{what} CSV {path} needs the columns `path` (or `sha256`) and `label`; "
            f"it has: {', '.join(map(str, df.columns)) or 'none'}"
        )
    sources = df[cols["source"]] if "source" in cols else [""] * len(df)
    triples = zip(df[cols[key]], df[cols["label"]], sources)
    rows = [
        CsvRow(i + 2, str(k).strip(), str(v).strip(), str(src).strip())
        for i, (k, v, src) in enumerate(triples)
    ]
    return LabelFile(key, rows, all(c in cols for c in SUGGEST_ONLY))


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
    db: Database, key: str, rows: list[CsvRow], csv_path: str
) -> tuple[dict[int, str], list[str]]:
    """image id -> label for the rows of a label/truth CSV, and the problems found."""
    problems: list[str] = []
    resolved: dict[int, str] = {}
    first_line: dict[int, int] = {}
    base = os.path.dirname(os.path.abspath(csv_path))
    for line, k, label, _ in rows:
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
    accept_pseudo: bool = False,
    who: str | None = None,
    chosen: str | None = None,
) -> LabelImport:
    """Expert labels from a CSV (path or sha256, label): all rows or none, one label batch.

    Rows that are vecstore's own pseudo-labels (an export's `source` column says
    propagated or none) are refused, or with ``accept_pseudo`` recorded with the source
    `accepted-pseudo:<file>` (their rows without a label skipped).

    Each label records how its image was chosen (see ``_chosen``), or ``chosen`` for every
    row of the file."""
    if chosen is not None:
        check_chosen(chosen)
    file = read_label_csv(csv_path, "labels")
    resolved, pseudo_ids = _resolve(db, file, str(csv_path), replace, new_class, accept_pseudo)
    existing = db.labels.all()
    todo = {i: lab for i, lab in resolved.items() if existing.get(i) != lab}
    how = _chosen(db, todo, pseudo_ids, file.suggested, chosen)
    name = os.path.basename(str(csv_path))
    changes = [
        Change(i, lab, f"{ACCEPTED}{name}" if i in pseudo_ids else f"csv:{name}", None, how[i])
        for i, lab in todo.items()
    ]
    db.labels.apply(changes, BatchInfo("import", who_is(who), f"csv:{name}", str(csv_path)))
    added = sum(1 for c in changes if c.image_id not in existing)
    return LabelImport(
        added=added,
        replaced=len(changes) - added,
        unchanged=len(resolved) - len(changes),
        chosen=dict(Counter(c.chosen for c in changes)),
    )


def _resolve(
    db: Database, file: LabelFile, csv_path: str, replace: bool, new_class: bool, accept: bool
) -> tuple[dict[int, str], set[int]]:
    """(image id -> label, the ids of the accepted pseudo-labels) of a labels file whose
    rows are all good, else BadInput listing the bad ones."""
    if not file.rows:
        raise BadInput(f"labels CSV {csv_path} has no rows")
    expert, pseudo, problems = _split_pseudo(file.rows, accept)
    resolved, found = resolve_rows(db, file.key, expert + pseudo, csv_path)
    problems += found
    pseudo_ids = _ids_of(db, file.key, pseudo, csv_path)
    _check_against_store(db, resolved, replace, new_class, problems)
    if problems:
        raise BadInput(
            f"nothing imported from {csv_path}; fix these rows first:\n  {_problem_list(problems)}"
        )
    return resolved, pseudo_ids


def _chosen(
    db: Database, ids: Iterable[int], pseudo_ids: set[int], suggest_file: bool, given: str | None
) -> dict[int, str]:
    """How each imported image came to be labeled: ``given`` for all, when given; else
    "suggested" for every row of a `vecstore suggest` output and every image a recorded
    suggest run picked, "review" for an accepted pseudo-label (a person accepted vecstore's
    guess), "import" for the others (presumed drawn at random)."""
    if given is not None:
        return dict.fromkeys(ids, given)
    picked = db.runs.picked()
    out = {}
    for i in ids:
        if suggest_file or i in picked:
            out[i] = "suggested"
        else:
            out[i] = "review" if i in pseudo_ids else "import"
    return out


def _split_pseudo(rows: list[CsvRow], accept: bool) -> tuple[list[CsvRow], list[CsvRow], list[str]]:
    """(expert rows, accepted pseudo-label rows, problems)."""
    pseudo = [r for r in rows if r.source in PSEUDO_SOURCES or r.source.startswith(ACCEPTED)]
    expert = [r for r in rows if r not in pseudo]
    if pseudo and not accept:
        return (
            expert,
            [],
            [
                f"{len(pseudo)} rows are vecstore's own pseudo-labels (source "
                f"{', '.join(sorted({r.source for r in pseudo}))}, e.g. line {pseudo[0].line}), "
                "not an expert's: importing them would make its guesses expert labels. Keep only "
                "the rows an expert checked, or pass --accept-pseudo-labels to record them with "
                "the source accepted-pseudo:<file> (`vecstore labels undo` takes them back)"
            ],
        )
    return expert, [r for r in pseudo if r.label], []


def _ids_of(db: Database, key: str, rows: list[CsvRow], csv_path: str) -> set[int]:
    return set(resolve_rows(db, key, rows, csv_path)[0]) if rows else set()


def _check_against_store(
    db: Database, resolved: dict[int, str], replace: bool, new_class: bool, problems: list[str]
) -> None:
    """New classes (a typo?) and labels that would replace others, as problems."""
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


def read_truth(db: Database, csv_path: str | os.PathLike[str]) -> dict[int, str]:
    """Ground truth (path or sha256, label) for evaluation; rows must all resolve, except
    images not in the store (the others are scored)."""
    key, rows, _ = read_label_csv(csv_path, "truth")
    resolved, problems = resolve_rows(db, key, rows, str(csv_path))
    problems = [p for p in problems if "is not in the store" not in p]
    if problems:
        raise BadInput(f"truth CSV {csv_path} has bad rows:\n  {_problem_list(problems)}")
    if not resolved:
        raise BadInput(f"no row of truth CSV {csv_path} matches an image of the store")
    return resolved
