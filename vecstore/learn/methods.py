"""The ways to turn a few expert labels into class probabilities for every row, behind one
transductive interface so that they can be compared on the same folds.

Each estimator has ``fit(X, y)`` (y: class index per row, -1 where unlabeled) and then
``classes_``, ``label_distributions_`` (n, C; rows sum to 1, or 0 where nothing reaches a
row), ``transduction_``, ``confidence_`` and ``reached_``, as scikit-learn's semi-supervised
estimators do. :func:`make_method` builds one by name (the names and their one-line meaning
are ``vecstore.params.LABEL_METHODS``):

- ``propagation`` / ``propagation-unbalanced``: vecstore's label propagation on the k-NN
  graph (vecstore.learn.propagation) with class-balanced seeds (every class's seeds weigh 1 in
  all, which favours small classes) or with every seed weighing 1 (which keeps the seeds'
  class shares);
- ``knn``: the similarity-weighted vote of the k nearest labeled rows (no graph diffusion);
- ``logistic``: a logistic-regression probe fitted on the labeled rows' vectors;
- ``label-spreading``: scikit-learn's LabelSpreading with its k-NN kernel, the reference
  implementation of the same idea (dense, meant for small sets).
"""

from __future__ import annotations

import numpy as np

from ..params import LABEL_METHODS, PropagationParams
from .knn import exact_knn, normalize
from .propagation import LabelPropagation, entropy_confidence

SPREADING_MAX_ROWS = 200_000  # LabelSpreading keeps dense (n, C) iterates and a sklearn graph
PREDICT_ROWS = 65536  # rows scored at a time by the probe


class _Transductive:
    """What every method sets once it has class probabilities for all rows."""

    def _finish(self, y: np.ndarray, p: np.ndarray) -> None:
        p = np.nan_to_num(np.asarray(p, dtype=np.float32), nan=0.0)
        np.clip(p, 0.0, None, out=p)
        seeded = np.flatnonzero(y >= 0)
        p[seeded] = 0.0  # the expert labels keep their class
        p[seeded, np.searchsorted(self.classes_, y[seeded])] = 1.0
        mass = p.sum(axis=1)
        self.reached_ = mass > 0
        p = np.divide(p, mass[:, None], out=p, where=mass[:, None] > 0)
        self.label_distributions_ = p
        self.transduction_ = np.where(mass > 0, self.classes_[p.argmax(axis=1)], -1)
        self.confidence_ = entropy_confidence(p)

    def _classes(self, y: np.ndarray) -> np.ndarray:
        self.classes_ = np.unique(y[y >= 0])
        if len(self.classes_) == 0:
            raise ValueError("no labeled rows (every y is -1)")
        return np.flatnonzero(y >= 0)


class KNNVote(_Transductive):
    """Each row's distribution is the vote of its k most similar labeled rows (cosine),
    weighted by similarity ** gamma; a labeled row does not vote for itself."""

    def __init__(self, n_neighbors: int = 5, gamma: float = 3.0) -> None:
        self.n_neighbors = n_neighbors
        self.gamma = gamma

    def fit(self, X: np.ndarray, y: np.ndarray) -> KNNVote:
        y = np.asarray(y)
        lab = self._classes(y)
        x = normalize(X)
        own = np.full(len(y), -1)
        own[lab] = np.arange(len(lab))  # a labeled row's own place among the voters
        sims, nbrs = exact_knn(x, x[lab], self.n_neighbors, exclude=own)
        wts = np.clip(sims, 0, None).astype(np.float64) ** self.gamma
        wts[nbrs < 0] = 0.0
        code = np.searchsorted(self.classes_, y[lab])
        p = np.zeros((len(y), len(self.classes_)))
        for j in range(nbrs.shape[1]):
            np.add.at(p, (np.arange(len(y)), code[np.maximum(nbrs[:, j], 0)]), wts[:, j])
        self._finish(y, p)
        return self


class LogisticProbe(_Transductive):
    """scikit-learn LogisticRegression fitted on the labeled rows' (normalised) vectors,
    its predict_proba for every row."""

    def __init__(self, C: float = 1.0, max_iter: int = 1000) -> None:
        self.C = C
        self.max_iter = max_iter

    def fit(self, X: np.ndarray, y: np.ndarray) -> LogisticProbe:
        from sklearn.linear_model import LogisticRegression

        y = np.asarray(y)
        lab = self._classes(y)
        x = normalize(X)
        if len(self.classes_) < 2:
            raise ValueError("a logistic probe needs labeled rows of two classes or more")
        model = LogisticRegression(C=self.C, max_iter=self.max_iter).fit(x[lab], y[lab])
        p = np.empty((len(y), len(self.classes_)), np.float32)
        for start in range(0, len(y), PREDICT_ROWS):
            p[start : start + PREDICT_ROWS] = model.predict_proba(x[start : start + PREDICT_ROWS])
        self._finish(y, p)
        return self


class Spreading(_Transductive):
    """scikit-learn LabelSpreading (k-NN kernel) on the normalised vectors, whose Euclidean
    neighbours are the cosine ones; refused past SPREADING_MAX_ROWS rows."""

    def __init__(self, n_neighbors: int = 5, alpha: float = 0.99, max_iter: int = 1000) -> None:
        self.n_neighbors = n_neighbors
        self.alpha = alpha
        self.max_iter = max_iter

    def fit(self, X: np.ndarray, y: np.ndarray) -> Spreading:
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.semi_supervised import LabelSpreading

        y = np.asarray(y)
        self._classes(y)
        if len(y) > SPREADING_MAX_ROWS:
            raise ValueError(
                f"label-spreading is the small-set reference (at most {SPREADING_MAX_ROWS:,} "
                f"rows, not {len(y):,}): use propagation, which solves the same problem sparsely"
            )
        model = LabelSpreading(
            kernel="knn", n_neighbors=self.n_neighbors, alpha=self.alpha, max_iter=self.max_iter
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(normalize(X), y)
        self._finish(y, model.label_distributions_)
        return self


def make_method(name: str, params: PropagationParams, *, progress: bool = False):
    """The estimator called ``name`` (a LABEL_METHODS key) with the graph settings of
    ``params``."""
    if name == "propagation" or name == "propagation-unbalanced":
        return LabelPropagation(
            params.n_neighbors,
            params.alpha,
            params.gamma,
            class_balanced=name == "propagation",
            progress=progress,
        )
    if name == "knn":
        return KNNVote(params.n_neighbors, params.gamma)
    if name == "logistic":
        return LogisticProbe()
    if name == "label-spreading":
        return Spreading(params.n_neighbors, params.alpha)
    raise ValueError(f"unknown method {name!r}: one of {', '.join(LABEL_METHODS)}")


def is_graph_method(name: str) -> bool:
    """Whether the method spreads over vecstore's k-NN graph (and so has a graph health)."""
    return name.startswith("propagation")


__all__ = ["KNNVote", "LogisticProbe", "Spreading", "is_graph_method", "make_method"]
