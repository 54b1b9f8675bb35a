"""k-NN graph from FAISS: cosine similarity (inner product of L2-normalised vectors),
weights s^gamma, symmetrised W + W^T, as a scipy sparse matrix."""

from __future__ import annotations

import faiss
import numpy as np
import scipy.sparse as sp

from .index import normalize


def knn_search(x: np.ndarray, k: int, batch: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of every row among the rows, itself left out.

    Returns (similarities, indices), each (n, k); -1 / 0 pad when n <= k.
    """
    x = normalize(x)
    n = len(x)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    kk = min(k + 1, n)
    sims = np.zeros((n, k), np.float32)
    nbrs = np.full((n, k), -1, np.int64)
    for start in range(0, n, batch):
        d, i = index.search(x[start : start + batch], kk)
        rows = np.arange(start, min(start + batch, n))
        # drop self wherever it appears (ties can put a duplicate vector first)
        keep = i != rows[:, None]
        for r in range(len(rows)):
            ii, dd = i[r][keep[r]][:k], d[r][keep[r]][:k]
            nbrs[rows[r], : len(ii)] = ii
            sims[rows[r], : len(dd)] = dd
    return sims, nbrs


def knn_graph(x: np.ndarray, k: int, gamma: float = 3.0) -> sp.csr_matrix:
    """Symmetric sparse affinity W = A + A^T with A_ij = max(s_ij, 0)^gamma for j in kNN(i)."""
    n = len(x)
    sims, nbrs = knn_search(x, k)
    valid = nbrs >= 0
    rows = np.repeat(np.arange(n), k)[valid.ravel()]
    cols = nbrs.ravel()[valid.ravel()]
    vals = np.clip(sims.ravel()[valid.ravel()], 0, None).astype(np.float64) ** gamma
    a = sp.csr_matrix((vals, (rows, cols)), shape=(n, n))
    return (a + a.T).tocsr()


def normalized_affinity(w: sp.spmatrix) -> sp.csr_matrix:
    """S = D^-1/2 W D^-1/2 (isolated nodes keep a zero row)."""
    d = np.asarray(w.sum(axis=1)).ravel()
    inv = np.zeros_like(d)
    inv[d > 0] = 1.0 / np.sqrt(d[d > 0])
    dm = sp.diags(inv)
    return (dm @ w @ dm).tocsr()
