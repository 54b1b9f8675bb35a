"""Which rows to label next: typical-and-diverse while clusters lack labels (in the spirit of
TypiClust, Hacohen et al. 2022), least certain pseudo-labels spread over clusters once they
have some. Arrays in, row indices out (vecstore.labeling.suggestion wraps it)."""

from __future__ import annotations

import numpy as np

from .cluster import FaissKMeans
from .graph import knn_search
from .knn import normalize


def typicality(x: np.ndarray, k: int = 20) -> np.ndarray:
    """1 / mean cosine distance to the k nearest neighbours: high in dense regions."""
    sims, nbrs = knn_search(x, min(k, max(1, len(x) - 1)))
    dist = np.where(nbrs >= 0, 1.0 - sims, np.nan)
    return 1.0 / (1e-6 + np.nanmean(dist, axis=1))


def choose_to_label(
    x: np.ndarray,
    labeled: np.ndarray,
    n: int,
    *,
    margin: np.ndarray | None = None,
    duplicate_similarity: float = 0.995,
    seed: int = 0,
) -> list[tuple[int, str, int]]:
    """Up to n row indices to label next, with why and their cluster: [(row, reason, cluster)].

    The rows are split into n clusters (k-means). A cluster with no labeled row gives its most
    typical row; a cluster with labels gives its least certain row (lowest margin between the
    two best pseudo-labels, divided by the square root of the typicality so that outliers do not
    win) when ``margin`` is given, else its most typical one. Labeled rows are never picked, and
    a row whose cosine similarity to a labeled or already picked row reaches
    ``duplicate_similarity`` is skipped as a near-duplicate.
    """
    x = normalize(x)  # the duplicate check compares cosines
    rows = len(x)
    n = min(n, len(np.setdiff1d(np.arange(rows), labeled)))
    if n <= 0:
        return []
    typ = typicality(x)
    one = np.zeros(rows, np.int64)
    clusters = FaissKMeans(n, n_init=3, seed=seed).fit(x).labels_ if n > 1 else one
    covered = set(clusters[labeled].tolist())
    is_labeled = np.zeros(rows, bool)
    is_labeled[labeled] = True
    chosen = [x[i] for i in labeled]
    picks: list[tuple[int, str, int]] = []
    sizes = np.bincount(clusters, minlength=n)
    for c in np.argsort(-sizes):  # the largest clusters first
        members = np.flatnonzero((clusters == c) & ~is_labeled)
        if len(members) == 0:
            continue
        uncertain = c in covered and margin is not None
        key = margin[members] / np.sqrt(typ[members]) if uncertain else -typ[members]
        i = _first_distinct(x, members[np.argsort(key)], chosen, duplicate_similarity)
        if i is None:
            continue
        picks.append(
            (i, _reason(int(c), int(sizes[c]), c in covered, margin, i, uncertain), int(c))
        )
        chosen.append(x[i])
        if len(picks) == n:
            break
    return picks


def _first_distinct(
    x: np.ndarray, order: np.ndarray, chosen: list[np.ndarray], threshold: float
) -> int | None:
    """The first row of ``order`` whose cosine similarity to every chosen row stays under
    ``threshold`` (not a near-duplicate), or None."""
    for i in order:
        if not chosen or float(np.max(np.asarray(chosen) @ x[i])) < threshold:
            return int(i)
    return None


def _reason(c: int, size: int, covered: bool, margin, i: int, uncertain: bool) -> str:
    if uncertain:
        return (
            f"least certain pseudo-label of cluster {c} ({size} images): "
            f"margin {margin[i]:.3f} between its two best labels"
        )
    if not covered:
        return f"most typical image of cluster {c} ({size} images), which has no label yet"
    return f"most typical image of cluster {c} ({size} images)"
