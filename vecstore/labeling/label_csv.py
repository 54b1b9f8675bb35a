"""Labels from files: expert labels imported all rows or none (one label batch), each
recording how its image was chosen (a `vecstore suggest` pick, or a row vecstore did not pick),
and the ground truth scored against. A file is a CSV (vecstore's own, or a person's) or one of
Label Studio's exports (JSON, JSON-MIN, CSV; read by vecstore.labeling.label_studio)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from ..db.labels import BatchInfo, Change
from ..errors import BadInput
from ..files import read_user_csv
from ..results import LabelImport
from . import label_studio
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


class LabelRow(NamedTuple):
    at: str  # where in the file: "line 3" (the header is line 1), "task 12 (annotation 40)"
    key: str  # path or sha256
    label: str
    source: str  # "" when the file has no `source` column


class LabelFile(NamedTuple):
    key: str  # the kind of the key column: "path" or "sha256"
    rows: list[LabelRow]
    suggested: bool  # a `vecstore suggest` output (it has its columns)
    tool: str = "csv"  # who wrote it: "csv" (vecstore or a person) or "label-studio"
    skipped: int = 0  # Label Studio tasks nobody annotated (nothing to import)
    problems: tuple[str, ...] = ()  # rows that cannot be read as one label


def read_label_file(path: str | os.PathLike[str], what: str) -> LabelFile:
    """The rows of a labels file: a CSV with a key column (path or sha256) and a `label`
    column (and, in vecstore's own exports, a `source` column), or one of Label Studio's
    exports (JSON, JSON-MIN or CSV: vecstore.labeling.label_studio)."""
    if str(path).lower().endswith(".json"):
        return _label_studio_file(*label_studio.json_rows(label_studio.read_json(path), path))
    df = read_user_csv(path, what)
    if label_studio.is_label_studio_csv(df.columns):
        return _label_studio_file(*label_studio.csv_rows(df))
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
        LabelRow(f"line {i + 2}", str(k).strip(), str(v).strip(), str(src).strip())
        for i, (k, v, src) in enumerate(triples)
    ]
    return LabelFile(key, rows, all(c in cols for c in SUGGEST_ONLY))


def _label_studio_file(rows: list[dict[str, Any]], skipped: int) -> LabelFile:
    """The annotation rows of a Label Studio export (at, sha256 and/or path, label: a list
    of choices) as a LabelFile, keyed by the tasks' sha256 (vecstore's tasks carry it), else
    their path."""
    key = next((k for k in ("sha256", "path") if all(k in r for r in rows)), None)
    if key is None:
        raise BadInput(
            f"{_keyless(rows)} (the tasks `vecstore export --format label-studio` writes have both)"
        )
    problems = tuple(
        f"{r['at']}: several choices {', '.join(map(repr, r['label']))} (one label per image)"
        for r in rows
        if len(r["label"]) > 1
    )
    out = [
        LabelRow(r["at"], r[key], r["label"][0].strip() if r["label"] else "", "")
        for r in rows
        if len(r["label"]) <= 1
    ]
    return LabelFile(key, out, False, label_studio.SOURCE, skipped, problems)


def _keyless(rows: list[dict[str, Any]]) -> str:
    """What is wrong with Label Studio rows that are not all keyed alike."""
    no_sha = next(r["at"] for r in rows if "sha256" not in r)
    no_path = next(r["at"] for r in rows if "path" not in r)
    if no_sha == no_path:
        return f"{no_sha} has neither a `sha256` nor a `path` data field to find its image by"
    return (
        f"{no_sha} has no `sha256` data field and {no_path} no `path`: the tasks of one "
        "file need the same one to find their images by"
    )


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
    db: Database, key: str, rows: list[LabelRow], csv_path: str
) -> tuple[dict[int, str], list[str]]:
    """image id -> label for the rows of a label/truth CSV, and the problems found."""
    problems: list[str] = []
    resolved: dict[int, str] = {}
    first_at: dict[int, str] = {}
    base = os.path.dirname(os.path.abspath(csv_path))
    for at, k, label, _ in rows:
        if not k:
            problems.append(f"{at}: empty {key}")
            continue
        if not label:
            problems.append(f"{at}: empty label for {k}")
            continue
        img = _find(db, key, k, base)
        if img is None:
            problems.append(f"{at}: {k} is not in the store")
        elif img.status != "ok":
            problems.append(f"{at}: {k} is recorded as a failed file ({img.error})")
        elif img.id in resolved and resolved[img.id] != label:
            problems.append(
                f"{at}: {k} is labeled {label!r} here but {resolved[img.id]!r} "
                f"on {first_at[img.id]} (same image)"
            )
        else:
            resolved[img.id] = label
            first_at.setdefault(img.id, at)
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
    file = read_label_file(csv_path, "labels")
    resolved, pseudo_ids = _resolve(db, file, str(csv_path), replace, new_class, accept_pseudo)
    existing = db.labels.all()
    todo = {i: lab for i, lab in resolved.items() if existing.get(i) != lab}
    reviewed = set(todo) if file.tool == label_studio.SOURCE else pseudo_ids
    how = _chosen(db, todo, reviewed, file.suggested, chosen)
    name = os.path.basename(str(csv_path))
    source = _source_of(file, name)
    changes = [
        Change(i, lab, f"{ACCEPTED}{name}" if i in pseudo_ids else source, None, how[i])
        for i, lab in todo.items()
    ]
    batch_source = f"{file.tool}:{name}"
    db.labels.apply(changes, BatchInfo("import", who_is(who), batch_source, str(csv_path)))
    added = sum(1 for c in changes if c.image_id not in existing)
    return LabelImport(
        added=added,
        replaced=len(changes) - added,
        unchanged=len(resolved) - len(changes),
        chosen=dict(Counter(c.chosen for c in changes)),
        tool=file.tool,
        skipped=file.skipped,
    )


def _source_of(file: LabelFile, name: str) -> str:
    """The source an imported label records: `label-studio` for the annotations of a Label
    Studio export (the batch names the file), `csv:<file>` for a CSV's rows."""
    return label_studio.SOURCE if file.tool == label_studio.SOURCE else f"csv:{name}"


def _resolve(
    db: Database, file: LabelFile, csv_path: str, replace: bool, new_class: bool, accept: bool
) -> tuple[dict[int, str], set[int]]:
    """(image id -> label, the ids of the accepted pseudo-labels) of a labels file whose
    rows are all good, else BadInput listing the bad ones."""
    if not file.rows and not file.problems:
        if file.tool == label_studio.SOURCE:
            raise BadInput(
                f"no task of the Label Studio export {csv_path} has an annotation "
                f"({file.skipped} tasks): nothing to import"
            )
        raise BadInput(f"labels CSV {csv_path} has no rows")
    expert, pseudo, problems = _split_pseudo(file.rows, accept)
    problems = [*file.problems, *problems]
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
    db: Database, ids: Iterable[int], reviewed: set[int], suggest_file: bool, given: str | None
) -> dict[int, str]:
    """How each imported image came to be labeled: ``given`` for all, when given; else
    "suggested" for every row of a `vecstore suggest` output and every image a recorded
    suggest run picked, "review" for the ``reviewed`` (an accepted pseudo-label: a person
    accepted vecstore's guess; a Label Studio annotation: a person reviewed its prediction),
    "import" for the others (presumed drawn at random)."""
    if given is not None:
        return dict.fromkeys(ids, given)
    picked = db.runs.picked()
    out = {}
    for i in ids:
        if suggest_file or i in picked:
            out[i] = "suggested"
        else:
            out[i] = "review" if i in reviewed else "import"
    return out


def _split_pseudo(
    rows: list[LabelRow], accept: bool
) -> tuple[list[LabelRow], list[LabelRow], list[str]]:
    """(expert rows, accepted pseudo-label rows, problems)."""
    pseudo = [r for r in rows if r.source in PSEUDO_SOURCES or r.source.startswith(ACCEPTED)]
    expert = [r for r in rows if r not in pseudo]
    if pseudo and not accept:
        return (
            expert,
            [],
            [
                f"{len(pseudo)} rows are vecstore's own pseudo-labels (source "
                f"{', '.join(sorted({r.source for r in pseudo}))}, e.g. {pseudo[0].at}), "
                "not an expert's: importing them would make its guesses expert labels. Keep only "
                "the rows an expert checked, or pass --accept-pseudo-labels to record them with "
                "the source accepted-pseudo:<file> (`vecstore labels undo` takes them back)"
            ],
        )
    return expert, [r for r in pseudo if r.label], []


def _ids_of(db: Database, key: str, rows: list[LabelRow], csv_path: str) -> set[int]:
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
    file = read_label_file(csv_path, "truth")
    resolved, problems = resolve_rows(db, file.key, file.rows, str(csv_path))
    problems = [*file.problems, *(p for p in problems if "is not in the store" not in p)]
    if problems:
        raise BadInput(f"truth CSV {csv_path} has bad rows:\n  {_problem_list(problems)}")
    if not resolved:
        raise BadInput(f"no row of truth CSV {csv_path} matches an image of the store")
    return resolved
