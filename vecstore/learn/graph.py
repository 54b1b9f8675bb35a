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

:func:`graph_health` checks the graph's connected components against the seeds: a label cannot
travel out of its seeds' components, so a class whose seeds sit in a small one, or a large
component with no seed, is warned about, with the images whose labels would mend it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

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


# ---- graph health: can the graph carry every class's labels? ------------------------------

# A class is isolated when the components holding its seeds hold fewer than ISOLATION times an
# even share of the images (n / C): at 10 classes, under 5 % of the images. Propagation cannot
# carry a label out of its seeds' components, so the rest of that class takes other labels.
ISOLATION = 0.5
# A component without a seed is worth a warning of its own from this size (images, and share
# of the store, whichever is larger); smaller ones are counted with the unreached images.
MIN_COMPONENT = 10
MIN_COMPONENT_SHARE = 0.01
MAX_COMPONENT_WARNINGS = 5  # the largest unseeded components named one by one
SUGGEST = 5  # images suggested for a warning
CANDIDATES = 50  # rows most like an isolated class, among which the least certain are suggested


@dataclass
class HealthWarning:
    """One weakness of the graph, with the images (rows, or ids) whose labels would fix it.

    ``kind``: "isolated-class" (the seeds of ``label`` sit in components holding ``images``),
    "unseeded-component" (a component of ``images`` with no seed) or "unreached" (``images``
    in ``components`` components without a seed, all told)."""

    kind: str
    images: int
    share: float  # images / n, rounded to 4 places
    label: str | None = None
    seeds: int = 0
    components: int = 1
    suggest: list[int] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)  # of ``suggest``, filled by the caller

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class GraphHealth:
    """Connected components of the k-NN graph against the seeds: per class the images its
    seeds can reach, the images no seed reaches, and the warnings."""

    n: int
    components: int
    largest: int  # images in the largest component
    unreached: int  # images in components without a seed
    reach: dict[str, int]  # class -> images in the components of its seeds
    warnings: list[HealthWarning]
    rule: str

    def to_dict(self) -> dict:
        return {**self.__dict__, "warnings": [w.to_dict() for w in self.warnings]}


def components(w: sp.spmatrix) -> tuple[np.ndarray, np.ndarray]:
    """The connected component of each row over the edges of positive weight of a symmetric
    graph, and each row's weighted degree (how central it is in its component)."""
    from scipy.sparse.csgraph import connected_components

    _, comp = connected_components(w > 0, directed=False)
    return comp.astype(np.int64), np.asarray(w.sum(axis=1)).ravel()


def graph_health(
    comp: np.ndarray,
    degree: np.ndarray,
    y: np.ndarray,
    x: np.ndarray,
    *,
    names: list[str] | None = None,
    ids: np.ndarray | None = None,
    distributions: np.ndarray | None = None,
    isolation: float = ISOLATION,
    min_component: int = MIN_COMPONENT,
) -> GraphHealth:
    """Health of a graph with components ``comp`` and degrees ``degree`` (see
    :func:`components`) for the seeds ``y`` (class code per row, -1 unlabeled); ``x`` the
    rows' vectors, ``distributions`` their class distributions after propagation (optional).
    Class codes are named by ``names``, rows by ``ids`` (default: themselves).

    Warns when a class's seeds sit in components holding < ``isolation`` * n / C images
    (suggesting unlabeled rows outside them like them, see :func:`_isolated`), when a component of
    >= max(``min_component``, 1 % of n) images has no seed (suggesting its most central rows:
    highest weighted degree), and when rows are in components without a seed."""
    n = len(y)
    sizes = np.bincount(comp)
    seeded = np.zeros(len(sizes), bool)
    seeded[comp[y >= 0]] = True
    codes = np.unique(y[y >= 0])
    name = (lambda c: str(names[c])) if names is not None else str
    row_id = (lambda r: int(ids[r])) if ids is not None else int
    reach, warnings = {}, []
    for c in codes:
        own = np.unique(comp[y == c])
        reach[name(c)] = int(sizes[own].sum())
        if reach[name(c)] < isolation * n / len(codes):
            warnings.append(_isolated(comp, own, y, x, c, name(c), distributions))
    warnings += _unseeded(comp, sizes, seeded, degree, max(min_component, MIN_COMPONENT_SHARE * n))
    unreached = int(sizes[~seeded].sum())
    if unreached:
        warnings.append(_unreached(comp, sizes, seeded, degree, warnings))
    for w in warnings:
        w.suggest = [row_id(r) for r in w.suggest]
    rule = (
        f"isolated class: its seeds' components hold < {isolation} x n/C images; unseeded "
        f"component: >= max({min_component}, {MIN_COMPONENT_SHARE:.0%} of n) images, no seed"
    )
    return GraphHealth(n, len(sizes), int(sizes.max()), unreached, reach, warnings, rule)


def _share(images: int, n: int) -> float:
    return round(images / n, 4)


def _isolated(comp, own, y, x, c, label, dist) -> HealthWarning:
    """Class c is cut off in the components ``own``. Suggested: among the CANDIDATES unlabeled
    rows outside them most like those components (cosine to their mean direction), the least
    certain (closest two best classes in ``dist``, the class distributions, when given): those
    are likeliest to be images of the class the graph gave to others. On the digits' measured
    case ("1" cut off in 27 images) 3 to 5 of the 5 suggested are "1"s, against 0 to 2 for the
    most alike alone."""
    inside = np.isin(comp, own)
    images = int(inside.sum())
    out = np.flatnonzero(~inside & (y < 0))
    xo = x[out].astype(np.float32)
    cos = (xo @ normalize(x[inside].astype(np.float32)).mean(axis=0)) / np.sqrt(
        np.maximum(np.einsum("ij,ij->i", xo, xo), 1e-12)
    )
    near = out[np.argsort(-cos, kind="stable")[:CANDIDATES]]
    if dist is not None and dist.shape[1] > 1:
        top2 = np.sort(dist[near], axis=1)[:, -2:]
        near = near[np.argsort(top2[:, 1] - top2[:, 0], kind="stable")]
    return HealthWarning(
        "isolated-class", images, _share(images, len(y)), label, int((y == c).sum()),
        len(own), near[:SUGGEST].tolist(),
    )  # fmt: skip


def _central(comp: np.ndarray, degree: np.ndarray, component: int, k: int) -> list[int]:
    """The k rows of a component with the highest weighted degree."""
    rows = np.flatnonzero(comp == component)
    return rows[np.argsort(-degree[rows], kind="stable")[:k]].tolist()


def _unseeded(comp, sizes, seeded, degree, min_size) -> list[HealthWarning]:
    """One warning for each of the largest components without a seed of >= min_size images."""
    big = [int(c) for c in np.argsort(-sizes, kind="stable") if not seeded[c]]
    big = [c for c in big if sizes[c] >= min_size][:MAX_COMPONENT_WARNINGS]
    n = len(comp)
    return [
        HealthWarning(
            "unseeded-component",
            int(sizes[c]),
            _share(int(sizes[c]), n),
            suggest=_central(comp, degree, c, min(3, SUGGEST)),
        )  # fmt: skip
        for c in big
    ]


def _unreached(comp, sizes, seeded, degree, warnings) -> HealthWarning:
    """All the rows in components without a seed; when no component is named on its own, the
    most central row of each of the largest such components is suggested."""
    cut = np.flatnonzero(~seeded)
    images = int(sizes[cut].sum())
    named = any(w.kind == "unseeded-component" for w in warnings)
    largest = cut[np.argsort(-sizes[cut], kind="stable")[:SUGGEST]]
    suggest = [] if named else [_central(comp, degree, c, 1)[0] for c in largest]
    return HealthWarning(
        "unreached", images, _share(images, len(comp)), components=len(cut), suggest=suggest
    )
