"""Metrics: clustering against known labels, pseudo-label quality with the costly error first
(recall of the positive class, F2, the threshold for a target recall), confidence curves."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics as skm


def purity(y_true: np.ndarray, clusters: np.ndarray) -> float:
    """Share of images whose cluster's majority label is their label."""
    cm = skm.cluster.contingency_matrix(y_true, clusters)
    return float(cm.max(axis=0).sum() / cm.sum())


def cluster_entropy(y_true: np.ndarray, clusters: np.ndarray) -> float:
    """Size-weighted mean entropy (nats) of the labels inside each cluster; 0 = pure clusters."""
    cm = skm.cluster.contingency_matrix(y_true, clusters).astype(np.float64)
    sizes = cm.sum(axis=0)
    p = cm / np.where(sizes > 0, sizes, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=0)
    return float((h * sizes).sum() / sizes.sum())


def clustering_metrics(
    y_true: np.ndarray | None, clusters: np.ndarray, x: np.ndarray | None = None, *,
    sample_size: int = 10000, seed: int = 0,
) -> dict[str, float]:
    """AMI, ARI, homogeneity, completeness, V-measure, purity, entropy against the known labels
    (when given) and the cosine silhouette (on a sample for large n, when vectors are given)."""
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
        out["silhouette"] = float(skm.silhouette_score(
            x, clusters, metric="cosine", sample_size=min(sample_size, len(x)), random_state=seed))
    return out


def threshold_for_recall(y_pos: np.ndarray, score: np.ndarray, target: float) -> dict[str, float] | None:
    """The highest score threshold whose recall of the positive class reaches ``target``, with
    the precision it costs. None when there is no positive."""
    if y_pos.sum() == 0:
        return None
    precision, recall, thresholds = skm.precision_recall_curve(y_pos, score)
    ok = np.flatnonzero(recall[:-1] >= target)  # the last point has no threshold
    if len(ok) == 0:
        return {"threshold": 0.0, "recall": 1.0, "precision": float(y_pos.mean())}
    j = ok[-1]  # thresholds increase with j: the last one still reaching the target
    return {"threshold": float(thresholds[j]), "recall": float(recall[j]), "precision": float(precision[j])}


def classification_metrics(
    y_true: list[str] | np.ndarray, y_pred: list[str | None] | np.ndarray, *,
    classes: list[str], proba: np.ndarray | None = None, positive: str | None = None,
    target_recall: float = 0.95,
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, per-class precision/recall/F1, confusion matrix; with a
    positive class: its recall, precision, F2, ROC-AUC and the threshold for target_recall.
    A missing prediction (None) counts as wrong."""
    y_true = np.asarray(y_true, dtype=object)
    y_pred = np.asarray(["<none>" if p is None else p for p in y_pred], dtype=object)
    labels = list(classes) + (["<none>"] if (y_pred == "<none>").any() else [])
    out: dict[str, Any] = {
        "n": int(len(y_true)),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(skm.recall_score(y_true, y_pred, labels=list(classes), average="macro", zero_division=0)),
    }
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=list(classes), zero_division=0)
    out["per_class"] = [
        {"label": c, "precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, c in enumerate(classes)
    ]
    out["confusion"] = {"labels": labels, "matrix": skm.confusion_matrix(y_true, y_pred, labels=labels).tolist()}
    if positive is not None:
        if positive not in classes:
            raise ValueError(f"positive class {positive!r} is not one of {classes}")
        pos = (y_true == positive).astype(int)
        pred_pos = (y_pred == positive).astype(int)
        out["positive"] = {
            "label": positive,
            "recall": float(skm.recall_score(pos, pred_pos, zero_division=0)),
            "precision": float(skm.precision_score(pos, pred_pos, zero_division=0)),
            "f2": float(skm.fbeta_score(pos, pred_pos, beta=2, zero_division=0)),
            "missed": int(((pos == 1) & (pred_pos == 0)).sum()),
        }
        if proba is not None:
            score = proba[:, list(classes).index(positive)]
            if 0 < pos.sum() < len(pos):
                out["positive"]["roc_auc"] = float(skm.roc_auc_score(pos, score))
            if pos.sum():
                prec, rec, thr_pts = skm.precision_recall_curve(pos, score)
                keep = np.unique(np.linspace(0, len(thr_pts) - 1, min(len(thr_pts), 200)).astype(int))
                out["positive"]["pr_curve"] = {
                    "precision": prec[keep].round(5).tolist(), "recall": rec[keep].round(5).tolist(),
                    "threshold": thr_pts[keep].round(5).tolist()}
            thr = threshold_for_recall(pos, score, target_recall)
            if thr is not None:
                out["positive"]["target_recall"] = target_recall
                out["positive"]["threshold_for_target_recall"] = thr
    return out


def coverage_curve(correct: np.ndarray, confidence: np.ndarray,
                   thresholds: np.ndarray | None = None) -> list[dict[str, float]]:
    """Accuracy and coverage of the pseudo-labels whose confidence is >= each threshold."""
    thresholds = np.round(np.linspace(0, 0.95, 20), 2) if thresholds is None else thresholds
    rows = []
    for t in thresholds:
        keep = confidence >= t
        rows.append({"threshold": float(t), "coverage": float(keep.mean()) if len(keep) else 0.0,
                     "accuracy": float(correct[keep].mean()) if keep.any() else float("nan")})
    return rows


def recommend_review_threshold(curve: list[dict[str, float]], target_accuracy: float) -> float | None:
    """The lowest confidence threshold above which the pseudo-labels reach target_accuracy
    (and stay there for every higher threshold); None if none does."""
    best = None
    for row in reversed(curve):
        if row["coverage"] > 0 and row["accuracy"] >= target_accuracy:
            best = row["threshold"]
        elif row["coverage"] > 0:
            break
    return best


def stratified_holdout(labels: np.ndarray, test_size: float, n_repeats: int, seed: int):
    """(train_idx, test_idx) pairs: each class keeps at least one seed and hides
    round(test_size * count) of its images when it has two or more."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(n_repeats):
        train, test = [], []
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            n_test = min(len(idx) - 1, max(1, int(round(test_size * len(idx))))) if len(idx) > 1 else 0
            test.extend(idx[:n_test])
            train.extend(idx[n_test:])
        yield np.array(sorted(train)), np.array(sorted(test))


def fit_learning_curve(labels: np.ndarray, scores: np.ndarray,
                       spread: np.ndarray | None = None) -> dict[str, float] | None:
    """Fit score(m) = a - b * m^(-c) (the inverse power law of learning curves) to scores
    measured with m labels, each weighted by its spread over repeats (noisy small-m points
    count less); None when there are too few distinct points to fit."""
    from scipy.optimize import curve_fit

    m = np.asarray(labels, dtype=np.float64)
    y = np.asarray(scores, dtype=np.float64)
    if len(np.unique(m)) < 3:
        return None

    def f(x, a, b, c):
        return a - b * np.power(x, -c)

    try:
        sigma = None if spread is None else np.asarray(spread, dtype=np.float64) + 0.005
        (a, b, c), _ = curve_fit(f, m, y, p0=(min(1.0, y.max() + 0.02), max(y.max() - y.min(), 0.05), 0.5),
                                 sigma=sigma, bounds=([0, 0, 0.01], [1, 10, 3]), maxfev=20000)
    except (RuntimeError, ValueError):
        return None
    resid = y - f(m, a, b, c)
    return {"a": float(a), "b": float(b), "c": float(c), "rmse": float(np.sqrt(np.mean(resid**2)))}


def predict_learning_curve(fit: dict[str, float], labels: float) -> float:
    return float(np.clip(fit["a"] - fit["b"] * labels ** (-fit["c"]), 0.0, 1.0))
