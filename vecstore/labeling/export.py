"""The pseudo-label table: one row per image with its label, where it came from, its
confidence, runner-up, margin to the decision, cluster, review flag, the decision that gave the
label and one probability column per class (``p_<class>``), as a DataFrame, a CSV file, Label
Studio tasks (vecstore.labeling.label_studio) or a dataset folder (vecstore.labeling.folders). For
a binary task whose latest evaluation promised a recall, the label is the positive class
exactly when p(positive) >= that threshold (both ways). The review flag marks the least sure
share of the pseudo-labels that the latest evaluation calibrated (vecstore.learn.review)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..dicom import IDENTIFYING
from ..errors import BadInput, NoRun
from ..files import write_csv
from ..learn.review import decision_margin, flagged
from ..params import FOLDER_MEDIA, ExportOptions
from ..results import Export
from . import folders, label_studio

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from sqlalchemy import Row

    from ..db import Database
    from ..db.models import Run

# without an evaluation to calibrate it: the quarter least sure pseudo-labels need review
DEFAULT_REVIEW_SHARE = 0.25
EXPORT_COLUMNS = [
    "image_id",
    "path",
    "sha256",
    "label",
    "source",
    "confidence",
    "second_label",
    "margin",
    "cluster",
    "needs_review",
    "review_reason",
    "run_id",
    "decision",
]
PROBA_PREFIX = "p_"  # then one column per class of the run


@dataclass
class ReviewRules:
    """Which pseudo-labels of a propagation run are flagged needs_review: the ``share`` least
    sure (margin to the decision; None: every one), and how labels are decided."""

    share: float | None
    origin: str  # where it comes from: "given", "evaluate run N" or "default"
    expected_accuracy: float | None  # of the unflagged, as the evaluation calibrated it
    # {label, threshold, target_recall, confidence, evaluate_run}: the recall promise of the
    # latest evaluation (threshold None: declined, with positives_needed)
    positive: dict[str, Any] | None


def review_rules(db: Database, run: Run, share: float | None) -> ReviewRules:
    """The rules for the pseudo-labels of propagation ``run``: from the latest evaluation
    made after that run (an older one scored other pseudo-labels), else the default."""
    ev = db.runs.latest("evaluate", run.space)
    if ev is not None and ev.id < run.id:
        ev = None
    positive = _promise_rule(ev) if ev is not None else None
    if share is not None:
        return ReviewRules(share, "given", None, positive)
    review = ev.stats.get("review") if ev is not None else None
    if review:
        origin = f"evaluate run {ev.id}"
        return ReviewRules(review["flag_share"], origin, review["expected_accuracy"], positive)
    return ReviewRules(DEFAULT_REVIEW_SHARE, "default", None, positive)


def _promise_rule(ev: Run) -> dict[str, Any] | None:
    promise = ev.stats.get("recall_promise")
    label = (ev.stats.get("positive") or {}).get("label")
    if not promise or label is None:
        return None
    return {
        "label": label,
        "threshold": promise["threshold"],
        "target_recall": promise["target"],
        "confidence": promise["confidence"],
        "positives_needed": promise["positives_needed"],
        "evaluate_run": ev.id,
    }


def export_rows(
    db: Database, run: Run, rules: ReviewRules, cluster_run: Run | None
) -> list[dict[str, Any]]:
    """The table of propagation ``run``: a row (EXPORT_COLUMNS) per usable image."""
    classes = run.stats.get("classes", [])
    seeds = db.labels.all()
    to_check = db.labels.review_reasons()  # expert labels whose file changed since
    preds = {i: p for i, p in db.outputs.predictions(run.id).items() if i not in seeds}
    decided = _Decided.of(preds, rules, classes)
    clusters = db.outputs.clusters(cluster_run.id) if cluster_run else {}
    rows = []
    for iid, path, sha in db.images.export_rows():
        row = {
            "image_id": iid,
            "path": path,
            "sha256": sha,
            "cluster": clusters.get(iid),
            "run_id": run.id,
        }
        if iid in seeds:
            row.update(expert_columns(seeds[iid], classes, to_check.get(iid)))
        elif iid not in preds:
            row.update(unpropagated_columns(run.id))
        else:
            row.update(decided.row(iid, preds[iid], rules, classes))
        rows.append(row)
    return rows


def unpropagated_columns(run_id: int) -> dict[str, Any]:
    """The columns of an image's row when propagation run ``run_id`` did not reach it (an
    image added since) and no expert labeled it."""
    return {
        "label": None,
        "source": "none",
        "confidence": 0.0,
        "second_label": None,
        "margin": None,
        "needs_review": True,
        "review_reason": f"not in propagation run {run_id} (run `vecstore propagate` again)",
        "decision": "none",
    }


def expert_columns(label: str, classes: list[str], review: str | None = None) -> dict[str, Any]:
    """The columns of an image's row when an expert labeled it ``label``; ``review``: why
    that label needs a look (None: it does not)."""
    return {
        "label": label,
        "source": "expert",
        "confidence": 1.0,
        "second_label": None,
        "margin": None,
        "needs_review": review is not None,
        "review_reason": review or "",
        "decision": "expert",
        **{PROBA_PREFIX + c: float(c == label) for c in classes},
    }


@dataclass
class _Decided:
    """The pseudo-labels' decisions, margins to them and review flags, made together: the
    flag marks a share of them, least sure first."""

    at: dict[int, int]  # image id -> row in the arrays
    proba: np.ndarray
    label: np.ndarray  # decided class index, -1: none
    margin: np.ndarray
    flag: np.ndarray
    pos_j: int | None
    threshold: float | None

    @classmethod
    def of(cls, preds: dict[int, Row], rules: ReviewRules, classes: list[str]) -> _Decided:
        pos_j = threshold = None
        pos = rules.positive
        if pos and pos["threshold"] is not None and pos["label"] in classes:
            pos_j, threshold = classes.index(pos["label"]), pos["threshold"]
        ids = list(preds)
        proba = np.zeros((len(ids), len(classes)), np.float32)
        for r, i in enumerate(ids):
            proba[r] = np.frombuffer(preds[i].distribution, np.float32)
        label, margin = decision_margin(proba, pos_j, threshold if len(classes) == 2 else None)
        at = {i: r for r, i in enumerate(ids)}
        return cls(at, proba, label, margin, flagged(margin, rules.share), pos_j, threshold)

    def row(self, iid: int, pr: Row, rules: ReviewRules, classes: list[str]) -> dict:
        r = self.at[iid]
        proba = self.proba[r]
        label = classes[self.label[r]] if self.label[r] >= 0 else None
        reasons = []
        if label is None:
            reasons.append("no expert label reaches it")
        elif not pr.reached:
            reasons.append("not connected to an expert label in the k-NN graph (neighbour vote)")
        if self.flag[r] and label is not None:
            least = f"among the {_share(rules.share)} least sure"
            reasons.append(f"{least} (margin {self.margin[r]:.3f})")
        if self.pos_j is not None and len(classes) > 2 and label != rules.positive["label"]:
            if proba[self.pos_j] >= self.threshold:
                reasons.append(
                    f"possible {rules.positive['label']}: p={proba[self.pos_j]:.3f} >= "
                    f"{self.threshold:.3f} (recall promise)"
                )
        return {
            "label": label,
            "source": "propagated",
            "confidence": round(pr.confidence, 6),
            "second_label": pr.second_label,
            "margin": round(float(self.margin[r]), 6),
            "needs_review": bool(reasons),
            "review_reason": "; ".join(reasons),
            "decision": self._decision(label, proba, rules, classes),
            **{PROBA_PREFIX + c: round(float(v), 6) for c, v in zip(classes, proba)},
        }

    def _decision(self, label, proba, rules: ReviewRules, classes: list[str]) -> str:
        """The rule that gave the label: for two classes with a recall promise, p(positive)
        against its threshold; else the most probable class."""
        if label is None or self.pos_j is None or len(classes) != 2:
            return "most probable"
        pos, op = rules.positive["label"], ">=" if proba[self.pos_j] >= self.threshold else "<"
        return f"p({pos}) {op} {self.threshold:.6g}"


def _share(share: float | None) -> str:
    return "100 %" if share is None else f"{100 * share:.0f} %"


def propagation_run(db: Database, space: str | None, run_id: int | None) -> Run:
    """Propagation run ``run_id``, else the latest one (of ``space`` when given)."""
    if run_id is not None:
        return db.runs.get(run_id, "propagate")
    run = db.runs.latest("propagate", db.spaces.get(space).name if space else None)
    if run is None:
        raise NoRun("no propagation run yet: run `vecstore propagate` first")
    return run


def export_table(db: Database, opts: ExportOptions) -> tuple[pd.DataFrame, Export]:
    """The pseudo-label table as a DataFrame (EXPORT_COLUMNS), and what it holds (its
    ``path`` is empty: nothing was written)."""
    import pandas as pd

    run = propagation_run(db, opts.space, opts.run_id)
    cluster_run = db.runs.latest("cluster", run.space)
    rules = review_rules(db, run, opts.review_share)
    rows = export_rows(db, run, rules, cluster_run)
    if opts.only_unlabeled:
        rows = [r for r in rows if r["source"] != "expert"]
    if opts.min_confidence is not None:
        rows = [r for r in rows if r["confidence"] >= opts.min_confidence]
    classes = run.stats.get("classes", [])
    df = pd.DataFrame(rows, columns=EXPORT_COLUMNS + [PROBA_PREFIX + c for c in classes])
    df["cluster"] = df["cluster"].astype("Int64")
    summary = Export(
        path="",
        rows=len(df),
        run_id=run.id,
        space=run.space,
        cluster_run_id=cluster_run.id if cluster_run else None,
        review_share=rules.share,
        review_from=rules.origin,
        expected_accuracy=rules.expected_accuracy,
        positive_rule=rules.positive,
        needs_review=int(df["needs_review"].sum()) if len(df) else 0,
        by_source={str(k): int(v) for k, v in df["source"].value_counts().items()},
        classes=list(classes),
        format=opts.format,
    )
    return df, summary


def export_file(db: Database, out: str | os.PathLike[str], opts: ExportOptions) -> Export:
    """Write the pseudo-label table to ``out`` (with the metadata columns asked for) in
    ``opts.format``: vecstore's CSV, Label Studio tasks, or a dataset folder."""
    df, summary = export_table(db, opts)
    meta: list[str] = []
    if opts.with_metadata:
        meta = metadata_columns_asked(db, opts.with_metadata)
        df = with_metadata(db, df, meta)
    if opts.format == "label-studio":
        root, config = label_studio.write_tasks(df, out, summary.classes, extra=meta)
        summary.path, summary.document_root, summary.label_config = str(out), root, config
    elif opts.format in FOLDER_MEDIA:
        _write_folder(df, out, opts, summary)
    else:
        summary.path = str(write_csv(out, df))
    return summary


def _write_folder(
    df: pd.DataFrame, out: str | os.PathLike[str], opts: ExportOptions, summary: Export
) -> None:
    """A FiftyOne dataset or an ImageFolder of the table's labeled rows, into ``summary``."""
    media = opts.media or "copy"
    if opts.format == "fiftyone":
        done = folders.write_fiftyone(df, out, summary.classes, media=media)
    else:
        done = folders.write_imagefolder(df, out, media=media)
    summary.path, summary.media = done.path, done.media
    summary.skipped_unlabeled = done.skipped_unlabeled


def metadata_columns_asked(db: Database, asked: Sequence[str]) -> list[str]:
    """The metadata columns ``asked`` names, in the store's order: "all" is every column
    that identifies no one; an identifying one (a patient, an examination) only by name."""
    hint = f" (or `all`: every one but {', '.join(IDENTIFYING)})"
    known = db.images.metadata_names([a for a in asked if a != "all"], hint=hint)
    every = "all" in asked
    return [c for c in known if c in asked or (every and c not in IDENTIFYING)]


def with_metadata(db: Database, df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``df`` (one row per image_id) with the metadata ``columns`` (as metadata_columns_asked
    gives them), empty where an image has no value."""
    clash = [c for c in columns if c in df.columns]
    if clash:
        raise BadInput(f"metadata column {clash[0]!r} has the name of an export column")
    meta = db.images.metadata_of()
    out = df.copy()
    for c in columns:
        out[c] = [meta.get(int(i), {}).get(c) for i in out["image_id"]]
    return out
