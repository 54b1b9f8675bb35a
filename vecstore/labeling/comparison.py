"""Every way of spreading the labels (vecstore.learn.methods) scored on the same out-of-fold
folds of the expert labels, as one table with the mean and spread over the folds; ``auto``
picks the best by the positive class's F2 for a binary task, else by accuracy."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..learn.metrics import positive_scores
from ..params import LABEL_METHODS, METHOD_METRICS, EvaluationParams, PropagationParams
from ..results import MethodComparison, MethodScore
from .crossfit import Experts, OutOfFold, cross_fit, latest_params
from .labels import classes as store_classes

if TYPE_CHECKING:  # pragma: no cover
    from ..db import Database


def compare_methods(
    db: Database,
    space: str | None,
    params: EvaluationParams,
    propagation: PropagationParams | None = None,
    methods: tuple[str, ...] = tuple(LABEL_METHODS),
) -> MethodComparison:
    """Score each method out-of-fold on the same folds (the graph settings of
    ``propagation``, default the space's latest propagation); not recorded as a run."""
    sp = db.spaces.get(space)
    classes = store_classes(db)
    base = propagation or latest_params(db, sp.name)
    experts = Experts.load(db, sp)
    positive = params.positive or minority_class(experts.labels, classes)
    rows, folds = [], 0
    for name in methods:
        oof = cross_fit(db, experts, classes, params, replace(base, method=name))
        folds = len(oof.pool)
        rows.append(score_method(name, oof, positive))
    criterion = "f2_pos" if positive is not None else "accuracy"
    best = max(rows, key=lambda r: r.mean[criterion] or 0.0)  # first of the best on ties
    return MethodComparison(
        space=sp.name,
        folds=folds,
        labels=len(experts.labels),
        positive=positive,
        criterion=criterion,
        best=best.method,
        rows=rows,
    )


def choose_method(
    db: Database, space: str | None, prop: PropagationParams, seed: int = 0
) -> tuple[PropagationParams, dict[str, Any]]:
    """For ``method`` auto: the parameters with the best method out-of-fold, and the
    comparison that chose it (recorded with the propagation run)."""
    cmp = compare_methods(db, space, EvaluationParams(seed=seed), prop)
    return replace(prop, method=cmp.best), cmp.to_dict()


def minority_class(labels: np.ndarray, classes: list[str]) -> str | None:
    """For two classes, the rarer among the expert labels (the costly one, usually)."""
    if len(classes) != 2:
        return None
    counts = [int((labels == c).sum()) for c in classes]
    return classes[int(np.argmin(counts))]


def score_method(method: str, oof: OutOfFold, positive: str | None) -> MethodScore:
    """The METHOD_METRICS of one method's out-of-fold predictions, per fold, on the fairly chosen
    labels (all of them when those lack a class)."""
    use = oof.scored()
    per_fold = []
    for f in range(len(oof.pool)):
        at = use & (oof.fold == f)
        if at.any():
            per_fold.append(_fold_metrics(oof.labels[at], oof.proba[at], oof.classes, positive))
    mean = {m: _agg(per_fold, m, np.mean) for m in METHOD_METRICS}
    std = {m: _agg(per_fold, m, np.std) for m in METHOD_METRICS}
    return MethodScore(method, LABEL_METHODS[method], mean, std)


def _agg(per_fold: list[dict], metric: str, how) -> float | None:
    vals = [f[metric] for f in per_fold if f[metric] is not None]
    return float(how(vals)) if vals else None


def _fold_metrics(
    truth: np.ndarray, proba: np.ndarray, classes: list[str], positive: str | None
) -> dict[str, float | None]:
    """Accuracy and balanced accuracy of the most probable class; with a positive class its
    recall, F2 and ROC-AUC of p(positive), as ``learn.metrics.positive_scores`` gives them."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    truth = truth.astype(str).astype(object)
    pred = np.array(classes, dtype=object)[proba.argmax(axis=1)].astype(str).astype(object)
    target = EvaluationParams.target_recall  # (the threshold it also finds is not used here)
    pos = (
        None if positive is None else positive_scores(truth, pred, classes, proba, positive, target)
    )
    return {
        "accuracy": float(accuracy_score(truth, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(truth, pred)),
        "recall_pos": pos.recall if pos else None,
        "f2_pos": pos.f2 if pos else None,
        "roc_auc": pos.roc_auc if pos else None,
    }


__all__ = ["choose_method", "compare_methods", "minority_class", "score_method"]
