"""Which images to label next: typical-and-diverse while clusters lack labels (in the spirit of
TypiClust, Hacohen et al. 2022), least certain pseudo-labels spread over clusters once they
have some. Arrays in, indices out; the Store wraps it."""

from __future__ import annotations

import numpy as np

from .cluster import FaissKMeans
from .graph import knn_search


def typicality(x: np.ndarray, k: int = 20) -> np.ndarray:
    """1 / mean cosine distance to the k nearest neighbours: high in dense regions."""
    sims, nbrs = knn_search(x, min(k, max(1, len(x) - 1)))
    dist = np.where(nbrs >= 0, 1.0 - sims, np.nan)
    return 1.0 / (1e-6 + np.nanmean(dist, axis=1))


def suggest(
    x: np.ndarray, labeled: np.ndarray, n: int, *, margin: np.ndarray | None = None,
    duplicate_similarity: float = 0.995, seed: int = 0,
) -> list[tuple[int, str, int]]:
    """Up to n row indices to label next, with why and their cluster: [(row, reason, cluster)].

    The rows are split into n clusters (k-means). A cluster with no labeled row gives its most
    typical row; a cluster with labels gives its least certain row (lowest margin between the
    two best pseudo-labels, divided by the square root of the typicality so that outliers do not
    win) when ``margin`` is given, else its most typical one. Labeled rows are never picked, and
    a row whose cosine similarity to a labeled or already picked row reaches
    ``duplicate_similarity`` is skipped as a near-duplicate.
    """
    rows = len(x)
    unlabeled = np.setdiff1d(np.arange(rows), labeled)
    n = min(n, len(unlabeled))
    if n <= 0:
        return []
    typ = typicality(x)
    clusters = FaissKMeans(n, n_init=3, seed=seed).fit(x).labels_ if n > 1 else np.zeros(rows, np.int64)
    covered = set(clusters[labeled].tolist())
    is_labeled = np.zeros(rows, bool)
    is_labeled[labeled] = True
    chosen_vecs = [x[i] for i in labeled]
    picks: list[tuple[int, str, int]] = []

    def near_duplicate(i: int) -> bool:
        return bool(chosen_vecs) and float(np.max(np.asarray(chosen_vecs) @ x[i])) >= duplicate_similarity

    sizes = np.bincount(clusters, minlength=n)
    for c in np.argsort(-sizes):  # the largest clusters first
        members = np.flatnonzero((clusters == c) & ~is_labeled)
        if len(members) == 0:
            continue
        if c not in covered or margin is None:
            order = members[np.argsort(-typ[members])]
            why = (f"most typical image of cluster {c} ({sizes[c]} images), which has no label yet"
                   if c not in covered else f"most typical image of cluster {c} ({sizes[c]} images)")
        else:
            order = members[np.argsort(margin[members] / np.sqrt(typ[members]))]
            why = None
        for i in order:
            if near_duplicate(i):
                continue
            reason = why or (f"least certain pseudo-label of cluster {c} ({sizes[c]} images): "
                             f"margin {margin[i]:.3f} between its two best labels")
            picks.append((int(i), reason, int(c)))
            chosen_vecs.append(x[i])
            break
        if len(picks) == n:
            break
    return picks
