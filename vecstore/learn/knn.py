"""Cosine geometry on arrays: L2 normalisation, exact top-k inner products, a running top-k.

Every other part (the FAISS indexes, the k-NN graph, clustering, the bench's ground truth)
takes its exact neighbours from :func:`exact_knn`, so there is one exact search in vecstore.
"""

from __future__ import annotations

import faiss
import numpy as np


def normalize(x: np.ndarray, *, inplace: bool = False) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero). A float32 array whose rows are
    already unit (or zero) comes back as it is, not copied: at a million rows a copy is GBs."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]  # no (n, d) temporary
    if np.all((np.abs(norms - 1) < 1e-5) | (norms == 0)):
        return x
    scale = np.where(norms > 0, norms, 1.0).astype(np.float32)
    if inplace:
        x /= scale
        return x
    return x / scale


def exact_knn(
    q: np.ndarray, db: np.ndarray, k: int, *, exclude: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k inner products of the rows of q among the rows of db: (sims, indices),
    each (len(q), min(k, len(db))), best first, -1 / 0 where fewer are left. ``exclude[r]``
    is a db row that query r must not get (its own row)."""
    k = min(k, len(db))
    if k <= 0 or not len(q):
        width = max(k, 0)
        return np.zeros((len(q), width), np.float32), np.full((len(q), width), -1, np.int64)
    asked = min(k + (exclude is not None), len(db))
    d, i = faiss.knn(q, db, asked, metric=faiss.METRIC_INNER_PRODUCT)
    if exclude is None:
        return d, i
    keep = (i != np.asarray(exclude)[:, None]) & (i >= 0)
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # kept entries first, in order
    ok = np.take_along_axis(keep, order, axis=1)
    sims = np.where(ok, np.take_along_axis(d, order, axis=1), 0).astype(np.float32)
    return sims, np.where(ok, np.take_along_axis(i, order, axis=1), -1)


class TopK:
    """Running k best (largest) scores and their ids for each of m rows, merged block by block."""

    def __init__(self, m: int, k: int) -> None:
        self.k = k
        self.sims = np.full((m, k), -np.inf, np.float32)
        self.ids = np.full((m, k), -1, np.int64)

    def push(self, rows: np.ndarray, scores: np.ndarray, ids: np.ndarray) -> None:
        """Merge a block's candidates for ``rows``: ``scores`` and their ``ids``, (len(rows), c)."""
        s = np.concatenate([self.sims[rows], scores], axis=1)
        i = np.concatenate([self.ids[rows], ids], axis=1)
        best = np.argpartition(s, -self.k, axis=1)[:, -self.k :]
        self.sims[rows] = np.take_along_axis(s, best, axis=1)
        self.ids[rows] = np.take_along_axis(i, best, axis=1)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(sims, ids) sorted by decreasing similarity; -1 / 0 where fewer than k were seen."""
        order = np.argsort(-self.sims, axis=1, kind="stable")
        s = np.take_along_axis(self.sims, order, axis=1)
        i = np.take_along_axis(self.ids, order, axis=1)
        empty = (i < 0) | ~np.isfinite(s)
        return np.where(empty, 0, s).astype(np.float32), np.where(empty, -1, i)
