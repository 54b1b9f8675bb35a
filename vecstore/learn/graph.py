"""k-NN graph from FAISS: cosine similarity (inner product of L2-normalised vectors),
weights s^gamma, symmetrised W + W^T, as a scipy sparse matrix.

Small sets get exact neighbours. Past ``exact_max`` rows the graph is an IVF self-join: the
rows are partitioned by k-means (the IVF coarse quantizer), each row probes the ``nprobe``
cells whose centroids are nearest to it, as an IVF search does, but the search runs list by
list: all the rows probing a cell are scored against that cell's members in one exact
``faiss.knn`` call, which reads each member once for thousands of rows, instead of each row
scanning its lists one by one, which is bound by memory bandwidth. ``nprobe`` is chosen on a
sample of rows so that the graph holds ``target_recall`` of the exact k nearest neighbours;
memory stays bounded by one block of rows at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import faiss
import numpy as np
import scipy.sparse as sp

from .knn import TopK, exact_knn, normalize

EXACT_MAX = 20_000  # rows; n^2 d multiply-adds stay around 0.2 TFLOP at 512-d
NPROBES = (1, 2, 4, 6, 8, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128)
JOIN_ROWS = 16384  # rows probing a cell gathered and scored at once: 32 MiB at 512-d


@dataclass
class GraphStats:
    """How a k-NN search was made: exact, or IVF self-join with its measured recall."""

    method: str  # "exact" | "ivf-self-join"
    n: int
    k: int
    nlist: int = 0
    nprobe: int = 0
    recall: float = 1.0  # recall@k of the neighbours, measured on `sample` rows (1.0 if exact)
    sample: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _exact(x: np.ndarray, k: int, bar, step: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    n = len(x)
    sims, nbrs = np.zeros((n, k), np.float32), np.full((n, k), -1, np.int64)
    for start in range(0, n, step):
        stop = min(start + step, n)
        s, i = exact_knn(x[start:stop], x, k, exclude=np.arange(start, stop))
        m = min(k, s.shape[1])
        sims[start:stop, :m], nbrs[start:stop, :m] = s[:, :m], i[:, :m]
        if bar is not None:
            bar.update(stop - start)
    return sims, nbrs


def _centroids(x: np.ndarray, nlist: int, seed: int) -> np.ndarray:
    """Spherical k-means centroids trained on a sample of 32 rows a cell (a coarse quantizer)."""
    km = faiss.Kmeans(
        x.shape[1],
        nlist,
        niter=10,
        seed=seed,
        spherical=True,
        max_points_per_centroid=32,
        min_points_per_centroid=1,
        verbose=False,
    )
    rng = np.random.default_rng(seed)
    km.train(x[np.sort(rng.choice(len(x), size=min(len(x), 32 * nlist), replace=False))])
    return km.centroids


def _nearest_cells(x: np.ndarray, cent: np.ndarray, p: int) -> np.ndarray:
    """The p cells nearest to each row, nearest first, int32 (n, p)."""
    out = np.empty((len(x), p), np.int32)
    step = 65536
    for start in range(0, len(x), step):
        out[start : start + step] = exact_knn(x[start : start + step], cent, p)[1]
    return out


def _choose_nprobe(
    x: np.ndarray, k: int, cent: np.ndarray, target: float, sample: int, seed: int
) -> tuple[int, float, int]:
    """Smallest nprobe at which sampled rows' probed cells hold >= target of their exact k-NN.

    A row's search is exact within the cells it probes, so the recall of the join is the
    share of true neighbours living in those cells: measured directly, no trial joins."""
    rng = np.random.default_rng(seed + 1)
    q = np.sort(rng.choice(len(x), size=min(sample, len(x)), replace=False))
    _, truth = exact_knn(x[q], x, min(k, len(x) - 1), exclude=q)
    valid = truth >= 0
    home = _nearest_cells(x[np.where(valid, truth, 0).ravel()], cent, 1).reshape(truth.shape)
    ladder = [p for p in NPROBES if p < len(cent)] + (
        [len(cent)] if len(cent) <= max(NPROBES) else []
    )
    probes = _nearest_cells(x[q], cent, ladder[-1])
    best = (ladder[-1], 1.0)
    for p in ladder:
        hit = (home[:, :, None] == probes[:, None, :p]).any(axis=2) & valid
        recall = float(hit.sum() / max(valid.sum(), 1))
        if recall >= target:
            return p, recall, len(q)
        best = (p, recall)
    return best[0], best[1], len(q)


def knn_search(
    x: np.ndarray,
    k: int,
    *,
    exact_max: int = EXACT_MAX,
    target_recall: float = 0.95,
    nlist: int | None = None,
    progress: bool = False,
    seed: int = 0,
    return_stats: bool = False,
):
    """k nearest neighbours (cosine) of every row among the rows, itself left out.

    Returns (similarities, indices), each (n, k), -1 / 0 padding where a row has fewer than k
    others; with ``return_stats`` also a GraphStats. Exact up to ``exact_max`` rows, else an
    IVF self-join tuned to ``target_recall`` (see the module docstring).
    """
    from tqdm import tqdm

    x = normalize(x)
    n = len(x)
    bar = tqdm(total=n, desc=f"{k}-NN graph", unit="img", disable=not progress, leave=False)
    try:
        if n <= exact_max:
            sims, nbrs = _exact(x, k, bar)
            stats = GraphStats("exact", n, k)
        else:
            sims, nbrs, stats = _ivf_join(x, k, nlist, target_recall, seed, bar)
    finally:
        bar.close()
    return (sims, nbrs, stats) if return_stats else (sims, nbrs)


def _ivf_join(x: np.ndarray, k: int, nlist: int | None, target: float, seed: int, bar):
    n = len(x)
    # ~2 sqrt(n) cells of ~sqrt(n)/2 rows: the join costs n * nprobe * n/nlist * d, the
    # partition n * nlist * d; this balances them at nprobe ~ 16-64
    nlist = nlist or int(2 ** round(math.log2(2 * math.sqrt(n))))
    nlist = max(2, min(nlist, n // 8))
    cent = _centroids(x, nlist, seed)
    nprobe, recall, sampled = _choose_nprobe(x, k, cent, target, 1000, seed)
    probes = _nearest_cells(x, cent, nprobe)  # (n, nprobe); the first is the row's own cell
    bar.set_postfix_str(f"nprobe {nprobe}")
    members = _lists(probes[:, 0], nlist)
    prober = _lists(probes.ravel(), nlist, stride=nprobe)  # rows probing each cell
    del probes
    top = TopK(n, k + 1)  # +1: a row meets itself in its own cell
    for c in range(nlist):
        mem, qs = members[c], prober[c]
        if not len(mem) or not len(qs):
            continue
        xm = x[mem]
        for start in range(0, len(qs), JOIN_ROWS):
            rows = qs[start : start + JOIN_ROWS]
            d, i = exact_knn(x[rows], xm, k + 1)
            top.push(rows, d, mem[i])
        bar.update(len(mem))
    sims, nbrs = top.result()
    own = nbrs == np.arange(n)[:, None]
    # drop the row itself (or, if it was crowded out by duplicates, the last entry)
    keep = ~own
    keep[~own.any(axis=1), k] = False
    sims = sims[keep].reshape(n, k)
    nbrs = nbrs[keep].reshape(n, k)
    return sims, nbrs, GraphStats("ivf-self-join", n, k, nlist, nprobe, round(recall, 4), sampled)


def _lists(cells: np.ndarray, nlist: int, stride: int = 1) -> list[np.ndarray]:
    """Row numbers grouped by cell: entry j of ``cells`` belongs to row j // stride."""
    order = np.argsort(cells, kind="stable")
    bounds = np.searchsorted(cells[order], np.arange(nlist + 1))
    if stride > 1:
        order //= stride
    return [order[bounds[c] : bounds[c + 1]] for c in range(nlist)]


def knn_graph(
    x: np.ndarray, k: int, gamma: float = 3.0, *, return_stats: bool = False, **search_kw
):
    """Symmetric sparse affinity W = A + A^T with A_ij = max(s_ij, 0)^gamma for j in kNN(i).

    ``search_kw`` go to :func:`knn_search` (exact_max, target_recall, progress, ...)."""
    n = len(x)
    sims, nbrs, stats = knn_search(x, k, return_stats=True, **search_kw)
    valid = nbrs >= 0
    rows = np.repeat(np.arange(n), k)[valid.ravel()]
    cols = nbrs.ravel()[valid.ravel()]
    vals = np.clip(sims.ravel()[valid.ravel()], 0, None).astype(np.float64) ** gamma
    del sims, nbrs
    a = sp.csr_matrix((vals, (rows, cols)), shape=(n, n))
    w = (a + a.T).tocsr()
    return (w, stats) if return_stats else w


def normalized_affinity(w: sp.spmatrix) -> sp.csr_matrix:
    """S = D^-1/2 W D^-1/2 (isolated nodes keep a zero row)."""
    d = np.asarray(w.sum(axis=1)).ravel()
    inv = np.zeros_like(d)
    inv[d > 0] = 1.0 / np.sqrt(d[d > 0])
    dm = sp.diags(inv)
    return (dm @ w @ dm).tocsr()
