"""The images as a reviewer pages through them (what `vecstore serve` shows): the latest
propagation's pseudo-label table beside the expert labels and metadata, filtered, sorted
and paginated; the review queue, riskiest first; one image's whole record; the figures of
the dashboard. Read-only: built from the database at one data version."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import BadInput, NoRun, UnknownImage
from .labeling import history as label_history
from .labeling.export import PROBA_PREFIX, expert_columns, export_table, unpropagated_columns
from .params import ExportOptions, matches_where

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .db import Database

SORTS = ("id", "confidence", "p_positive")
MAX_PAGE = 500  # images a page holds at most


@dataclass(frozen=True)
class ImageFilter:
    """Which images, in which order: each field None means any."""

    label: str | None = None  # the label in force (expert, else pseudo)
    pseudo_label: str | None = None  # the pseudo-label (expert labels left out)
    expert: str | None = None  # the expert label
    source: str | None = None  # expert | propagated | none
    cluster: int | None = None
    needs_review: bool | None = None
    where: tuple[tuple[str, str], ...] = ()  # metadata column = value (as text)
    sort: str = "id"  # SORTS
    descending: bool = False
    offset: int = 0
    limit: int = 60


@dataclass
class ReviewTable:
    """One image per row (image_id, path, label, source, confidence, margin, p_<class>, ...,
    needs_review, review_reason, cluster, expert) as read from the database (``df``), with
    the expert labels given since (``overlay``: image id -> label), at ``version``. One
    image's row and label read the overlay; ``frame`` (for listings) is ``df`` with it
    applied, made once per table."""

    df: pd.DataFrame
    classes: list[str]
    positive: str | None  # the costly class of the latest evaluation (its recall promise)
    run_id: int | None  # the propagation shown; None: none yet (expert labels only)
    space: str | None
    version: int
    flagged_share: float | None = None
    expected_accuracy: float | None = None
    metadata: dict[int, dict[str, Any]] = field(default_factory=dict)
    mark: tuple = ()  # table_mark() when it was read
    by_id: dict[int, tuple[Any, str]] = field(default_factory=dict)  # see label_of
    rows: dict[int, int] = field(default_factory=dict)  # image id -> its row's position
    overlay: dict[int, str] = field(default_factory=dict)  # expert labels given since
    _frame: pd.DataFrame | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        df = self.df
        if not self.by_id and len(df):
            self.by_id = dict(zip(df["image_id"], zip(df["label"], df["source"])))
        if not self.rows and len(df):
            self.rows = {int(iid): pos for pos, iid in enumerate(df["image_id"])}

    @property
    def frame(self) -> pd.DataFrame:
        """The table with the overlay's expert labels in their rows."""
        if self._frame is None:
            self._frame = _with_overlay(self)
        return self._frame

    def row(self, image_id: int) -> dict[str, Any]:
        """One image's row (UnknownImage when the table has none)."""
        pos = self.rows.get(image_id)
        if pos is None:
            raise UnknownImage(f"no image with id {image_id} in this store")
        row = self.df.iloc[pos].to_dict()
        if image_id in self.overlay:
            row.update(_expert_row(self, self.overlay[image_id]))
        return row

    def label_of(self, image_id: int) -> tuple[str | None, str]:
        """(label in force, its source) of an image; (None, "none") for one not here."""
        if image_id in self.overlay:
            return self.overlay[image_id], "expert"
        label, source = self.by_id.get(image_id, (None, "none"))
        return (label if isinstance(label, str) else None), source


def table_mark(db: Database) -> tuple:
    """What moves when the review table would change, read in one cheap query: the latest
    label batch, the latest finished run other than `suggest` (propagate, evaluate,
    cluster, ingest, ...), the largest image id given and the images' count."""
    return tuple(
        db.read(
            "SELECT (SELECT MAX(id) FROM label_batches), "
            "(SELECT MAX(id) FROM runs WHERE status = 'done' AND kind != 'suggest'), "
            "(SELECT seq FROM sqlite_sequence WHERE name = 'images'), "
            "(SELECT COUNT(*) FROM images)"
        )[0]
    )


def review_table(db: Database, space: str | None, version: int) -> ReviewTable:
    """The latest propagation's table (of ``space`` when given); without one, the images
    with their expert labels only."""
    mark = table_mark(db)
    table = _review_table(db, space, version)
    table.mark = mark
    return table


def _review_table(db: Database, space: str | None, version: int) -> ReviewTable:
    import pandas as pd

    meta = db.images.metadata_of()
    try:
        df, summary = export_table(db, ExportOptions(space=space))
    except NoRun:
        classes = sorted(set(db.labels.all().values()))
        return ReviewTable(_experts_only(db), classes, None, None, space, version, metadata=meta)
    classes = [c[len(PROBA_PREFIX) :] for c in df.columns if c.startswith(PROBA_PREFIX)]
    df = df.assign(expert=df["label"].where(df["source"] == "expert"))
    df["cluster"] = df["cluster"].astype("float").where(df["cluster"].notna(), np.nan)
    rule = summary.positive_rule or {}
    positive = rule.get("label") or _evaluated_positive(db, summary.space)
    return ReviewTable(
        df=pd.DataFrame(df),
        classes=classes,
        positive=positive if positive in classes else None,
        run_id=summary.run_id,
        space=summary.space,
        version=version,
        flagged_share=summary.review_share,
        expected_accuracy=summary.expected_accuracy,
        metadata=meta,
    )


def _experts_only(db: Database) -> pd.DataFrame:
    import pandas as pd

    seeds = db.labels.all()
    images = db.images.export_rows()
    rows = [_experts_only_row(iid, path, sha, seeds.get(iid)) for iid, path, sha in images]
    return pd.DataFrame(rows, columns=list(rows[0]) if rows else ["image_id"])


def _experts_only_row(iid: int, path: str, sha: str | None, label: str | None) -> dict[str, Any]:
    """An image's row in a store with no propagation yet (``label``: its expert's, or None)."""
    return {
        "image_id": iid,
        "path": path,
        "sha256": sha,
        "label": label,
        "expert": label,
        "source": "expert" if label is not None else "none",
        "confidence": 1.0 if label is not None else 0.0,
        "second_label": None,
        "margin": np.nan,
        "needs_review": False,
        "review_reason": "",
        "decision": "expert" if label is not None else "none",
        "cluster": np.nan,
    }


def _evaluated_positive(db: Database, space: str) -> str | None:
    ev = db.runs.latest("evaluate", space)
    return (ev.params or {}).get("positive") if ev is not None else None


# ---- a page of images ------------------------------------------------------------------------
def select(table: ReviewTable, f: ImageFilter) -> tuple[int, list[dict[str, Any]]]:
    """(how many images match, the page of them asked for)."""
    if f.sort not in SORTS:
        raise BadInput(f"sort must be one of {', '.join(SORTS)}, not {f.sort!r}")
    if f.sort == "p_positive" and table.positive is None:
        raise BadInput("no positive class yet: run `vecstore evaluate --positive CLASS`")
    if not 1 <= f.limit <= MAX_PAGE or f.offset < 0:
        raise BadInput(f"limit must be 1 to {MAX_PAGE} and offset at least 0")
    df = table.frame[_mask(table, f)]
    key = {"id": "image_id", "confidence": "confidence"}.get(f.sort)
    key = key or PROBA_PREFIX + str(table.positive)
    df = df.sort_values([key, "image_id"], ascending=[not f.descending, True], kind="stable")
    page = df.iloc[f.offset : f.offset + f.limit]
    return len(df), [item(table, row) for row in page.to_dict("records")]


def _mask(table: ReviewTable, f: ImageFilter) -> np.ndarray:
    df = table.frame
    keep = np.ones(len(df), bool)
    for column, value in [
        ("label", f.label),
        ("expert", f.expert),
        ("source", f.source),
        ("cluster", f.cluster),
        ("needs_review", f.needs_review),
    ]:
        if value is not None:
            keep &= (df[column] == value).to_numpy()
    if f.pseudo_label is not None:
        keep &= ((df["label"] == f.pseudo_label) & (df["source"] == "propagated")).to_numpy()
    if f.where:
        have = {i for i, m in table.metadata.items() if matches_where(m, f.where)}
        keep &= df["image_id"].isin(have).to_numpy()
    return keep


def item(table: ReviewTable, row: dict[str, Any]) -> dict[str, Any]:
    """The JSON of one image of the table."""
    return {
        "id": int(row["image_id"]),
        "path": row["path"],
        "name": os.path.basename(row["path"] or ""),
        "label": _none(row.get("label")),
        "expert": _none(row.get("expert")),
        "source": row["source"],
        "confidence": _float(row.get("confidence")),
        "margin": _float(row.get("margin")),
        "second_label": _none(row.get("second_label")),
        "needs_review": bool(row.get("needs_review")),
        "review_reason": row.get("review_reason") or "",
        "cluster": None if _float(row.get("cluster")) is None else int(row["cluster"]),
        "p": {c: _float(row.get(PROBA_PREFIX + c)) for c in table.classes},
    }


def _none(v: Any) -> Any:
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else v


def _float(v: Any) -> float | None:
    v = _none(v)
    return None if v is None else float(v)


# ---- the review queue ------------------------------------------------------------------------
def review_queue(table: ReviewTable, offset: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
    """The flagged pseudo-labels, the riskiest first: with a positive class, those called
    negative, most probably positive first (a possible missed positive), then the flagged
    positives, least sure first; without one, least sure first."""
    df = table.frame
    if "margin" not in df or not len(df):
        return 0, []
    df = df[df["needs_review"] & (df["source"] == "propagated")]
    if table.positive is not None:
        p = df[PROBA_PREFIX + table.positive]
        missed = df["label"] != table.positive
        df = df.assign(_g=(~missed).astype(int), _k=np.where(missed, -p, df["margin"]))
    else:
        df = df.assign(_g=0, _k=df["margin"])
    df = df.sort_values(["_g", "_k", "image_id"], kind="stable")
    page = df.iloc[offset : offset + limit].to_dict("records")
    return len(df), [{**item(table, r), "risk": _risk(table, r)} for r in page]


def _risk(table: ReviewTable, row: dict[str, Any]) -> str:
    pos = table.positive
    if pos is not None and row["label"] != pos:
        return f"possible missed {pos}: p({pos}) = {row[PROBA_PREFIX + pos]:.3f}"
    return row.get("review_reason") or "least sure"


# ---- one image -------------------------------------------------------------------------------
def image_record(db: Database, table: ReviewTable, image_id: int) -> dict[str, Any]:
    """One image: its row of the table, metadata, expert label (who, when, how chosen) and
    label history."""
    row = table.row(image_id)
    lab = db.labels.get(image_id)
    events = label_history.history(db, str(image_id))
    last = next((e for e in reversed(events) if e.new_label is not None), None)
    expert = None
    if lab is not None:
        expert = {
            "label": lab.label,
            "source": lab.source,
            "chosen": lab.chosen,
            "who": last.who if last else "",
            "at": last.at if last else "",
        }
    return {
        **item(table, row),
        "sha256": row.get("sha256"),
        "decision": row.get("decision") or "",
        "metadata": table.metadata.get(image_id, {}),
        "expert_detail": expert,
        "history": [
            {
                "batch": e.batch,
                "at": e.at,
                "who": e.who,
                "kind": e.kind,
                "old_label": e.old_label,
                "new_label": e.new_label,
                "new_source": e.new_source,
            }
            for e in events
        ],
    }


# ---- the dashboard ---------------------------------------------------------------------------
def dashboard(db: Database, table: ReviewTable) -> dict[str, Any]:
    """Counts per label and source, the propagation shown, the flagged share, the recall
    promise of the latest evaluation and the latest learning curve."""
    df = table.frame
    counts = (
        df.groupby(["label", "source"], dropna=False).size().reset_index(name="count")
        if len(df)
        else None
    )
    prop = db.runs.get(table.run_id, "propagate") if table.run_id else None
    return {
        "images": len(df),
        "classes": table.classes,
        "positive": table.positive,
        "space": table.space,
        "counts": [
            {"label": _none(r["label"]), "source": r["source"], "count": int(r["count"])}
            for r in (counts.to_dict("records") if counts is not None else [])
        ],
        "expert": int((df["source"] == "expert").sum()) if len(df) else 0,
        "pseudo": int((df["source"] == "propagated").sum()) if len(df) else 0,
        "flagged": int((df["needs_review"] & (df["source"] == "propagated")).sum())
        if len(df)
        else 0,
        # a share of None flags every pseudo-label (no smaller share reaches the target)
        "flagged_share": 1.0
        if table.flagged_share is None and table.run_id
        else table.flagged_share,
        "expected_accuracy": table.expected_accuracy,
        "propagation": None
        if prop is None
        else {
            "run_id": prop.id,
            "space": prop.space,
            "method": (prop.params or {}).get("method"),
            "at": prop.started_at.isoformat(timespec="seconds"),
        },
        "promise": _promise(db, table),
        "curve": _curve(db, table.space),
        "version": table.version,
    }


def _promise(db: Database, table: ReviewTable) -> dict[str, Any] | None:
    ev = db.runs.latest("evaluate", table.space) if table.space else None
    p = (ev.stats or {}).get("recall_promise") if ev is not None else None
    if not p or table.positive is None:
        return None
    holds = p.get("threshold") is not None
    more = None if holds else max(0, p["positives_needed"] - p["positives"])
    reason = (
        f"recall of {table.positive} >= {p['target']:.2f} with probability "
        f"{p['holds_with']:.2f} for p({table.positive}) >= {p['threshold']:.4g}"
        if holds
        else f"declined: {p['positives']} {table.positive} labels scored, "
        f"{p['positives_needed']} needed ({more} more)"
    )
    return {
        "label": table.positive,
        "target": p["target"],
        "confidence": p["confidence"],
        "threshold": p.get("threshold"),
        "holds": holds,
        "reason": reason,
        "more_positives": more,
        "run_id": ev.id,
    }


def _curve(db: Database, space: str | None) -> dict[str, Any] | None:
    run = db.runs.latest("learning_curve", space) if space else None
    points = (run.stats or {}).get("points") if run is not None else None
    if not points:
        return None
    return {
        "sizes": [pt["labels"] for pt in points],
        "accuracy": [pt["accuracy"] for pt in points],
        "recall": [pt["recall"] for pt in points] if points[0].get("recall") is not None else None,
        "run_id": run.id,
    }


def with_expert_labels(
    table: ReviewTable, labels: dict[int, str], version: int, mark: tuple
) -> ReviewTable | None:
    """``table`` with these expert labels (image id -> label), as read at ``version``: what
    a rebuild would give when they are the only changes since the table was read (each
    image's row becomes the expert's; the other pseudo-labels stay until the next
    propagation). None when it cannot be told so (an image or a class the table lacks).
    Nothing is copied but the overlay: a label write costs no pass over the table."""
    if "margin" not in table.df or not all(iid in table.rows for iid in labels):
        return None
    if not set(labels.values()) <= set(table.classes):
        return None
    overlay = {**table.overlay, **labels}
    return replace(table, version=version, mark=mark, overlay=overlay, _frame=None)


GROWING_RUNS = ("ingest", "embed")  # runs that may add images and change nothing else shown


def with_new_images(db: Database, table: ReviewTable, mark: tuple) -> ReviewTable | None:
    """``table`` with the images added since it was read (a CLI ingest beside the server
    commits a chunk every few seconds) appended as rows no propagation reached: what a
    rebuild would give when they are the only change, at the cost of the new rows instead
    of the whole table. Its label batches stay those of ``table`` (see
    with_expert_labels). None when more changed: a run other than an ingest (or one that
    read metadata), an image gone, usable again or read for the first time."""
    runs = db.runs.done_after(table.mark[1])
    if any(r.kind not in GROWING_RUNS or (r.params or {}).get("metadata_csv") for r in runs):
        return None
    top = max(table.rows, default=0)
    unread = int(table.df["sha256"].isna().sum())
    if db.images.usable_up_to(top) != (len(table.rows), sum(table.rows), unread):
        return None
    new = db.images.export_rows(after=top)
    grown = table.df
    if new:
        grown = _appended(table, new)
    rows = {**table.rows, **{int(r[0]): len(table.df) + k for k, r in enumerate(new)}}
    by_id = {**table.by_id, **{int(r[0]): (None, "none") for r in new}}
    meta = {**table.metadata, **db.images.metadata_of([int(r[0]) for r in new])}
    kept = (table.mark[0], *mark[1:])
    return replace(table, df=grown, mark=kept, rows=rows, by_id=by_id, metadata=meta, _frame=None)


def _appended(table: ReviewTable, new: list) -> pd.DataFrame:
    """``table.df`` with rows for the images ``new`` ((id, path, sha256)), of its dtypes."""
    import pandas as pd

    if table.run_id is None:
        rows = [_experts_only_row(int(i), p, sha, None) for i, p, sha in new]
    else:
        blank = {**unpropagated_columns(table.run_id), "run_id": table.run_id, "expert": None}
        rows = [{"image_id": int(i), "path": p, "sha256": sha, **blank} for i, p, sha in new]
    add = pd.DataFrame(rows, columns=table.df.columns).astype(table.df.dtypes.to_dict())
    return pd.concat([table.df, add], ignore_index=True)


def _expert_row(table: ReviewTable, label: str) -> dict[str, Any]:
    """The columns of a row whose image has the expert label ``label``."""
    return {**expert_columns(label, table.classes), "expert": label}


def _with_overlay(table: ReviewTable) -> pd.DataFrame:
    """``table.df`` with the overlay's labels in their rows (the table's own frame left as
    read: other requests may be reading it)."""
    if not table.overlay:
        return table.df
    df = table.df.copy()
    for label in set(table.overlay.values()):
        rows = df.index[[table.rows[i] for i, lab in table.overlay.items() if lab == label]]
        for column, value in _expert_row(table, label).items():
            df.loc[rows, column] = value
    return df
