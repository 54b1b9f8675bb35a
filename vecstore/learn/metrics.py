"""Metrics on arrays: clustering against known labels, pseudo-label quality with the costly
error first (recall of the positive class, F2, the threshold for a target recall), accuracy
and coverage by confidence. scikit-learn computes the scores; purity and cluster entropy are
small helpers."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

NONE = "<none>"  # the prediction of an image no expert label reaches


def _skm():
    """scikit-learn's metrics, imported on first use: ~1 s that commands computing no
    metric (ingest, query, export) do not pay."""
    from sklearn import metrics

    return metrics


def purity(y_true: np.ndarray, clusters: np.ndarray) -> float:
    """Share of images whose cluster's majority label is their label."""
    cm = _skm().cluster.contingency_matrix(y_true, clusters)
    return float(cm.max(axis=0).sum() / cm.sum())


def cluster_entropy(y_true: np.ndarray, clusters: np.ndarray) -> float:
    """Size-weighted mean entropy (nats) of the labels inside each cluster; 0 = pure clusters."""
    cm = _skm().cluster.contingency_matrix(y_true, clusters).astype(np.float64)
    sizes = cm.sum(axis=0)
    p = cm / np.where(sizes > 0, sizes, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=0)
    return float((h * sizes).sum() / sizes.sum())


def clustering_metrics(
    y_true: np.ndarray | None,
    clusters: np.ndarray,
    x: np.ndarray | None = None,
    *,
    sample_size: int = 10000,
    seed: int = 0,
) -> dict[str, float]:
    """AMI, ARI, homogeneity, completeness, V-measure, purity, entropy against the known labels
    (when given) and the cosine silhouette (on a sample for large n, when vectors are given)."""
    skm = _skm()
    out: dict[str, float] = {}
    if y_true is not None and len(y_true):
        out.update(
            ami=float(skm.adjusted_mutual_info_score(y_true, clusters)),
            ari=float(skm.adjusted_rand_score(y_true, clusters)),
            homogeneity=float(skm.homogeneity_score(y_true, clusters)),
            completeness=float(skm.completeness_score(y_true, clusters)),
            v_measure=float(skm.v_measure_score(y_true, clusters)),
            purity=purity(y_true, clusters),
            entropy=cluster_entropy(y_true, clusters),
        )
    if x is not None and 1 < len(np.unique(clusters)) < len(x):
        out["silhouette"] = float(
            skm.silhouette_score(
                x,
                clusters,
                metric="cosine",
                sample_size=min(sample_size, len(x)),
                random_state=seed,
            )
        )
    return out


@dataclass
class RecallThreshold:
    """The highest probability threshold whose recall of the positive class reaches a target."""

    threshold: float
    recall: float
    precision: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class ClassScore:
    label: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class PositiveScores:
    """The costly class: its recall first, then precision, F2, misses, ROC-AUC and the
    threshold that reaches the target recall (the last three need probabilities)."""

    label: str
    recall: float
    precision: float
    f2: float
    missed: int
    roc_auc: float | None = None
    pr_curve: dict[str, list[float]] | None = None  # precision, recall, threshold (<= 200 points)
    target_recall: float | None = None
    threshold_for_target_recall: RecallThreshold | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class ClassificationScores:
    """Accuracy, balanced accuracy, per-class scores, the confusion matrix and the positive
    class's scores (when one was named)."""

    n: int
    accuracy: float
    balanced_accuracy: float
    per_class: list[ClassScore]
    confusion_labels: list[str]
    confusion: list[list[int]]  # rows: truth, columns: predicted, in confusion_labels order
    positive: PositiveScores | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n": self.n,
            "accuracy": self.accuracy,
            "balanced_accuracy": self.balanced_accuracy,
            "per_class": [asdict(c) for c in self.per_class],
            "confusion": {"labels": self.confusion_labels, "matrix": self.confusion},
        }
        if self.positive is not None:
            out["positive"] = self.positive.to_dict()
        return out


def threshold_for_recall(
    y_pos: np.ndarray, score: np.ndarray, target: float
) -> RecallThreshold | None:
    """The highest score threshold whose recall of the positive class reaches ``target``, with
    the precision it costs. None when there is no positive."""
    if y_pos.sum() == 0:
        return None
    precision, recall, thresholds = _skm().precision_recall_curve(y_pos, score)
    ok = np.flatnonzero(recall[:-1] >= target)  # the last point has no threshold
    if len(ok) == 0:
        return RecallThreshold(0.0, 1.0, float(y_pos.mean()))
    j = ok[-1]  # thresholds increase with j: the last one still reaching the target
    return RecallThreshold(float(thresholds[j]), float(recall[j]), float(precision[j]))


def classification_metrics(
    y_true: list[str] | np.ndarray,
    y_pred: list[str | None] | np.ndarray,
    *,
    classes: list[str],
    proba: np.ndarray | None = None,
    positive: str | None = None,
    target_recall: float = 0.95,
) -> ClassificationScores:
    """Accuracy, balanced accuracy, per-class precision/recall/F1, confusion matrix; with a
    positive class: its recall, precision, F2, ROC-AUC and the threshold for target_recall.
    A missing prediction (None) counts as wrong."""
    skm = _skm()
    y_true = np.asarray(y_true, dtype=object)
    y_pred = np.asarray([NONE if p is None else p for p in y_pred], dtype=object)
    classes = list(classes)
    labels = classes + ([NONE] if (y_pred == NONE).any() else [])
    p, r, f, s = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=classes, zero_division=0
    )
    balanced = skm.recall_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)
    return ClassificationScores(
        n=int(len(y_true)),
        accuracy=float(skm.accuracy_score(y_true, y_pred)),
        balanced_accuracy=float(balanced),
        per_class=[
            ClassScore(c, float(p[i]), float(r[i]), float(f[i]), int(s[i]))
            for i, c in enumerate(classes)
        ],
        confusion_labels=labels,
        confusion=skm.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        positive=None
        if positive is None
        else positive_scores(y_true, y_pred, classes, proba, positive, target_recall),
    )


def positive_scores(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    classes: list[str],
    proba: np.ndarray | None,
    positive: str,
    target_recall: float,
) -> PositiveScores:
    """The scores of the positive class; with probabilities, ROC-AUC, the precision-recall
    curve and the threshold that reaches ``target_recall``."""
    skm = _skm()
    if positive not in classes:
        raise ValueError(f"positive class {positive!r} is not one of {classes}")
    pos = (y_true == positive).astype(int)
    pred_pos = (y_pred == positive).astype(int)
    out = PositiveScores(
        label=positive,
        recall=float(skm.recall_score(pos, pred_pos, zero_division=0)),
        precision=float(skm.precision_score(pos, pred_pos, zero_division=0)),
        f2=float(skm.fbeta_score(pos, pred_pos, beta=2, zero_division=0)),
        missed=int(((pos == 1) & (pred_pos == 0)).sum()),
    )
    if proba is None:
        return out
    score = proba[:, classes.index(positive)]
    if 0 < pos.sum() < len(pos):
        out.roc_auc = float(skm.roc_auc_score(pos, score))
    if pos.sum():
        prec, rec, thr_pts = skm.precision_recall_curve(pos, score)
        keep = np.unique(np.linspace(0, len(thr_pts) - 1, min(len(thr_pts), 200)).astype(int))
        out.pr_curve = {
            "precision": prec[keep].round(5).tolist(),
            "recall": rec[keep].round(5).tolist(),
            "threshold": thr_pts[keep].round(5).tolist(),
        }
    thr = threshold_for_recall(pos, score, target_recall)
    if thr is not None:
        out.target_recall = target_recall
        out.threshold_for_target_recall = thr
    return out


__all__ = [
    "ClassScore",
    "ClassificationScores",
    "PositiveScores",
    "RecallThreshold",
    "classification_metrics",
    "cluster_entropy",
    "clustering_metrics",
    "purity",
    "threshold_for_recall",
]
