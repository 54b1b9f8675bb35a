"""Clustering: FAISS k-means (spherical, several restarts, fixed seed) and spectral clustering
(FAISS k-means on the leading eigenvectors of the normalised k-NN graph). scikit-learn style."""

from __future__ import annotations

import faiss
import numpy as np
from scipy.sparse.linalg import eigsh

from ..params import ClusterParams
from .graph import knn_graph, normalized_affinity
from .knn import normalize


class FaissKMeans:
    """k-means with faiss.Kmeans on L2-normalised rows (the cosine geometry of the index).

    Sets ``labels_``, ``cluster_centers_``, ``inertia_`` (sum of squared distances to the
    centroids of the normalised rows).
    """

    def __init__(
        self,
        n_clusters: int = 8,
        n_init: int = ClusterParams.n_init,
        max_iter: int = 50,
        seed: int = ClusterParams.seed,
        normalize_rows: bool = True,
        max_points_per_centroid: int = 512,
    ) -> None:
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.max_iter = max_iter
        self.seed = seed
        self.normalize_rows = normalize_rows
        # past k * 512 rows the centroids are trained on a random sample of that size (FAISS's
        # own subsampling) and every row is then assigned: 1M rows, k = 100 in seconds per
        # restart instead of minutes, and the objective within a fraction of a percent
        self.max_points_per_centroid = max_points_per_centroid

    def _prep(self, X: np.ndarray) -> np.ndarray:
        return normalize(X) if self.normalize_rows else np.ascontiguousarray(X, dtype=np.float32)

    def fit(self, X: np.ndarray) -> FaissKMeans:
        x = self._prep(X)
        if not 1 <= self.n_clusters <= len(x):
            raise ValueError(
                f"n_clusters={self.n_clusters} must be between 1 and {len(x)} (the rows)"
            )
        km = faiss.Kmeans(
            x.shape[1],
            self.n_clusters,
            niter=self.max_iter,
            nredo=self.n_init,
            seed=self.seed,
            verbose=False,
            max_points_per_centroid=self.max_points_per_centroid,
            min_points_per_centroid=1,
        )
        km.train(x)
        self._km = km
        self.cluster_centers_ = km.centroids.copy()
        d, i = km.index.search(x, 1)
        self.labels_ = i.ravel().astype(np.int64)
        self.inertia_ = float(d.sum())
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self._km.index.search(self._prep(X), 1)[1].ravel().astype(np.int64)


class SpectralFaissClustering:
    """Spectral clustering (Ng, Jordan & Weiss 2001) on the k-NN graph.

    The ``n_clusters`` leading eigenvectors of S = D^-1/2 W D^-1/2 (ARPACK), rows
    normalised, clustered by FAISS k-means. Sets ``labels_`` and ``embedding_``.
    """

    def __init__(
        self,
        n_clusters: int = 8,
        n_neighbors: int = ClusterParams.n_neighbors,
        gamma: float = 1.0,
        n_init: int = ClusterParams.n_init,
        seed: int = ClusterParams.seed,
    ) -> None:
        self.n_clusters = n_clusters
        self.n_neighbors = n_neighbors
        self.gamma = gamma
        self.n_init = n_init
        self.seed = seed

    def fit(self, X: np.ndarray) -> SpectralFaissClustering:
        n = len(X)
        if not 2 <= self.n_clusters < n:
            raise ValueError(f"n_clusters={self.n_clusters} must be between 2 and {n - 1}")
        s = normalized_affinity(knn_graph(X, self.n_neighbors, self.gamma))
        rng = np.random.default_rng(self.seed)
        # tol=0 (machine precision): well-separated groups give eigenvalues packed near 1, and
        # a looser tolerance returns mixtures of them (two half-moons came out at AMI 0.36)
        _, vecs = eigsh(s, k=self.n_clusters, which="LA", v0=rng.standard_normal(n), tol=0)
        self.embedding_ = normalize(vecs)
        km = FaissKMeans(self.n_clusters, n_init=self.n_init, seed=self.seed, normalize_rows=False)
        self.labels_ = km.fit(self.embedding_).labels_
        return self


def make_clusterer(params: ClusterParams, k: int) -> FaissKMeans | SpectralFaissClustering:
    """The estimator ``params`` names, for k clusters."""
    if params.method == "spectral":
        return SpectralFaissClustering(
            k, n_neighbors=params.n_neighbors, n_init=params.n_init, seed=params.seed
        )
    return FaissKMeans(k, n_init=params.n_init, seed=params.seed)


def choose_k(
    X: np.ndarray, params: ClusterParams, *, sample_size: int = 5000
) -> tuple[int, dict[int, float]]:
    """The k of ``params.ks()`` with the best silhouette (cosine, on a sample for large n);
    returns (k, scores)."""
    from sklearn.metrics import silhouette_score

    x = normalize(X)
    ks = params.ks()
    seed = params.seed
    scores: dict[int, float] = {}
    for k in ks:
        if not 2 <= k < len(x):
            continue
        labels = make_clusterer(params, k).fit(x).labels_
        if len(np.unique(labels)) < 2:
            continue
        scores[k] = float(
            silhouette_score(
                x, labels, metric="cosine", sample_size=min(sample_size, len(x)), random_state=seed
            )
        )
    if not scores:
        raise ValueError(f"no k in {list(ks)} can be scored on {len(x)} images")
    return max(scores, key=scores.get), scores
