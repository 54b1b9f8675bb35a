"""The pseudo-label table: one row per image with its label, where it came from, its
confidence, runner-up, cluster, review flag, the decision that gave the label and one
probability column per class (``p_<class>``), as a DataFrame or a CSV file. For a binary task
whose latest evaluation promised a recall, the label is the positive class exactly when
p(positive) >= that threshold (both ways)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import NoRun
from ..files import write_csv
from ..params import ExportOptions
from ..results import Export

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from ..db import Database
    from ..db.models import Prediction, Run

DEFAULT_REVIEW_BELOW = 0.3  # confidence under which a pseudo-label needs review (see evaluate)
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
    """When a pseudo-label of a propagation run is flagged needs_review."""

    review_below: float  # confidence threshold
    origin: str  # where it comes from: "given", "evaluate run N" or "default"
    # {label, threshold, target_recall, confidence, evaluate_run}: the recall promise of the
    # latest evaluation (threshold None: declined, with positives_needed)
    positive: dict[str, Any] | None


def review_rules(db: Database, run: Run, review_below: float | None) -> ReviewRules:
    """The rules for the pseudo-labels of propagation ``run``: from the latest evaluation
    made after that run (an older one scored other pseudo-labels), else the default."""
    ev = db.runs.latest("evaluate", run.space)
    if ev is not None and ev.id < run.id:
        ev = None
    positive = _promise_rule(ev) if ev is not None else None
    if review_below is not None:
        return ReviewRules(review_below, "given", positive)
    if ev is not None and ev.stats.get("review_below") is not None:
        return ReviewRules(float(ev.stats["review_below"]), f"evaluate run {ev.id}", positive)
    return ReviewRules(DEFAULT_REVIEW_BELOW, "default", positive)


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
    pos_j = None
    if rules.positive and rules.positive["threshold"] is not None:
        if rules.positive["label"] in classes:
            pos_j = classes.index(rules.positive["label"])
    seeds = db.labels.all()
    to_check = db.labels.review_reasons()  # expert labels whose file changed since
    preds = db.outputs.predictions(run.id)
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
            row.update(
                label=seeds[iid],
                source="expert",
                confidence=1.0,
                second_label=None,
                margin=None,
                needs_review=iid in to_check,
                review_reason=to_check.get(iid, ""),
                decision="expert",
                **{PROBA_PREFIX + c: float(c == seeds[iid]) for c in classes},
            )
        elif iid not in preds:
            why = f"not in propagation run {run.id} (run `vecstore propagate` again)"
            row.update(
                label=None,
                source="none",
                confidence=0.0,
                second_label=None,
                margin=None,
                needs_review=True,
                review_reason=why,
                decision="none",
            )
        else:
            row.update(_pseudo_label(preds[iid], rules, pos_j, classes))
        rows.append(row)
    return rows


def _pseudo_label(
    pr: Prediction, rules: ReviewRules, pos_j: int | None, classes: list[str]
) -> dict[str, Any]:
    proba = np.frombuffer(pr.distribution, np.float32)
    label, decision = _decide(pr, proba, rules, pos_j, classes)
    reasons = []
    if pr.label is None:
        reasons.append("no expert label reaches it")
    elif not pr.reached:
        reasons.append("not connected to an expert label in the k-NN graph (neighbour vote)")
    if pr.confidence < rules.review_below:
        reasons.append(f"confidence {pr.confidence:.3f} < {rules.review_below:.3f}")
    if pos_j is not None and len(classes) > 2 and label != rules.positive["label"]:
        if proba[pos_j] >= rules.positive["threshold"]:
            reasons.append(
                f"possible {rules.positive['label']}: p={proba[pos_j]:.3f} >= "
                f"{rules.positive['threshold']:.3f} (recall promise)"
            )
    return {
        "label": label,
        "source": "propagated",
        "confidence": round(pr.confidence, 6),
        "second_label": pr.second_label,
        "margin": round(pr.margin, 6),
        "needs_review": bool(reasons),
        "review_reason": "; ".join(reasons),
        "decision": decision,
        **{PROBA_PREFIX + c: round(float(v), 6) for c, v in zip(classes, proba)},
    }


def _decide(
    pr: Prediction, proba: np.ndarray, rules: ReviewRules, pos_j: int | None, classes: list[str]
) -> tuple[str | None, str]:
    """The label and the rule that gave it: for two classes with a recall promise,
    p(positive) against its threshold; else the most probable class."""
    if pr.label is None or pos_j is None or len(classes) != 2:
        return pr.label, "most probable"
    pos, thr = rules.positive["label"], rules.positive["threshold"]
    if proba[pos_j] >= thr:
        return pos, f"p({pos}) >= {thr:.6g}"
    return classes[1 - pos_j], f"p({pos}) < {thr:.6g}"


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
    rules = review_rules(db, run, opts.review_below)
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
        review_below=rules.review_below,
        review_below_from=rules.origin,
        positive_rule=rules.positive,
        needs_review=int(df["needs_review"].sum()) if len(df) else 0,
        by_source={str(k): int(v) for k, v in df["source"].value_counts().items()},
    )
    return df, summary


def export_csv(db: Database, out: str | os.PathLike[str], opts: ExportOptions) -> Export:
    """Write the pseudo-label table to ``out`` as CSV."""
    df, summary = export_table(db, opts)
    summary.path = str(write_csv(out, df))
    return summary
