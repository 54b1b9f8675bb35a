"""The estimators on arrays: k-means, spectral clustering, label propagation, metrics."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_mutual_info_score

from vecstore.learn.cluster import FaissKMeans, SpectralFaissClustering, choose_k
from vecstore.learn.graph import knn_graph, normalized_affinity
from vecstore.learn.metrics import (
    RecallThreshold,
    classification_metrics,
    cluster_entropy,
    clustering_metrics,
    purity,
    threshold_for_recall,
)
from vecstore.learn.propagation import LabelPropagation, entropy_confidence
from vecstore.params import ClusterParams


def blobs(n_per: int, centers: list[list[float]], spread: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(c, spread, size=(n_per, len(c))) for c in centers])
    y = np.repeat(np.arange(len(centers)), n_per)
    return x.astype(np.float32), y


DIRECTIONS = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]  # well apart in cosine


def test_kmeans_recovers_separated_groups_and_is_deterministic():
    x, y = blobs(50, DIRECTIONS, 0.1)
    a = FaissKMeans(3, seed=7).fit(x)
    b = FaissKMeans(3, seed=7).fit(x)
    assert adjusted_mutual_info_score(y, a.labels_) == pytest.approx(1.0)
    assert np.array_equal(a.labels_, b.labels_)
    assert np.array_equal(a.predict(x), a.labels_)
    assert a.inertia_ > 0 and a.cluster_centers_.shape == (3, 4)
    with pytest.raises(ValueError, match="n_clusters"):
        FaissKMeans(500).fit(x)


def test_choose_k_by_silhouette():
    x, _ = blobs(40, DIRECTIONS, 0.05)
    k, scores = choose_k(x, ClusterParams(k_range=(2, 6)))
    assert k == 3 and set(scores) == {2, 3, 4, 5, 6}


def test_spectral_separates_what_kmeans_cannot():
    """Two interleaved half-moons: k-means cuts them wrong, the k-NN graph follows them."""
    from sklearn.datasets import make_moons

    x, y = make_moons(400, noise=0.04, random_state=0)
    x = np.c_[x, np.full(len(x), 3.0)].astype(np.float32)  # offset: cosine keeps the shape
    spectral = SpectralFaissClustering(2, n_neighbors=10).fit(x)
    kmeans = FaissKMeans(2).fit(x)
    assert adjusted_mutual_info_score(y, spectral.labels_) > 0.9
    assert adjusted_mutual_info_score(y, kmeans.labels_) < 0.5


def test_knn_graph_is_symmetric_weighted_and_normalised():
    x, _ = blobs(20, DIRECTIONS, 0.1)
    w = knn_graph(x, 4, gamma=3.0)
    assert (w != w.T).nnz == 0 and w.diagonal().sum() == 0
    assert w.min() >= 0 and w.max() <= 2.0 + 1e-6  # s^3 <= 1, counted at most twice
    s = normalized_affinity(w)
    d = np.asarray(w.sum(axis=1)).ravel()
    i, j = w.nonzero()
    np.testing.assert_allclose(
        np.asarray(s[i, j]).ravel(), np.asarray(w[i, j]).ravel() / np.sqrt(d[i] * d[j]), rtol=1e-6
    )


def test_propagation_matches_the_closed_form_solution():
    x, y = blobs(15, DIRECTIONS, 0.2, seed=3)
    seeds = np.full(len(y), -1)
    seeds[[0, 15, 30, 31]] = y[[0, 15, 30, 31]]
    lp = LabelPropagation(n_neighbors=5, alpha=0.9, tol=1e-10, max_iter=500).fit(x, seeds)
    s = normalized_affinity(knn_graph(x, 5, 3.0)).toarray()
    ymat = np.zeros((len(y), 3))
    for c in range(3):
        m = seeds == c
        ymat[m, c] = 1 / m.sum()  # class-balanced
    z = np.linalg.solve(np.eye(len(y)) - 0.9 * s, ymat)
    np.testing.assert_allclose(lp.label_distributions_, z / z.sum(1, keepdims=True), atol=1e-6)
    assert np.array_equal(lp.transduction_, y)
    assert lp.reached_.all() and lp.confidence_.min() > 0


def test_propagation_is_class_balanced():
    """One seed against ten: without balancing, the big class's mass floods the small one."""
    x, y = blobs(40, DIRECTIONS[:2], 0.25, seed=1)
    seeds = np.full(len(y), -1)
    seeds[:10] = 0
    seeds[40] = 1
    lp = LabelPropagation(n_neighbors=8).fit(x, seeds)
    assert (lp.transduction_ == y).mean() > 0.95


def test_unreached_component_gets_a_neighbour_vote_and_is_marked():
    # the third group is its own component in the graph, nearer (in cosine) to group 0
    x, y = blobs(20, [[1, 0, 0, 0], [0, 1, 0, 0], [0.6, 0.2, 0.77, 0]], 0.02)
    seeds = np.full(len(y), -1)
    seeds[0], seeds[20] = 0, 1  # no seed in the third group
    lp = LabelPropagation(n_neighbors=3).fit(x, seeds)
    assert not lp.reached_[40:].any() and lp.reached_[:40].all()
    assert (lp.transduction_[40:] == 0).all()  # the vote of its nearest reached images
    assert np.allclose(lp.label_distributions_.sum(axis=1), 1.0)
    # a group with no positive similarity to any reached image gets no label at all
    x2, _ = blobs(20, DIRECTIONS, 0.02)
    x2[40:] = -(x2[:20] + x2[20:40])  # opposite to both seeded groups
    lp2 = LabelPropagation(n_neighbors=3).fit(x2, seeds)
    assert (lp2.transduction_[40:] == -1).all() and (lp2.confidence_[40:] == 0).all()


def test_entropy_confidence_bounds():
    p = np.array([[1.0, 0, 0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0], [0, 0, 0]])
    np.testing.assert_allclose(
        entropy_confidence(p), [1.0, 0.0, 1 - np.log(2) / np.log(3), 0.0], atol=1e-12
    )


def test_clustering_metrics_against_hand_computed_values():
    truth = np.array([0, 0, 0, 1, 1, 1])
    clusters = np.array([0, 0, 1, 1, 1, 1])
    assert purity(truth, clusters) == pytest.approx(5 / 6)
    # cluster 0 pure; cluster 1 has 1 of class 0 and 3 of class 1
    h1 = -(0.25 * np.log(0.25) + 0.75 * np.log(0.75))
    assert cluster_entropy(truth, clusters) == pytest.approx(4 / 6 * h1)
    m = clustering_metrics(truth, clusters, np.eye(6, dtype=np.float32) + 1)
    assert set(m) == {
        "ami",
        "ari",
        "homogeneity",
        "completeness",
        "v_measure",
        "purity",
        "entropy",
        "silhouette",
    }
    assert clustering_metrics(truth, truth)["ami"] == pytest.approx(1.0)


def test_threshold_for_target_recall_and_positive_metrics():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    score = np.array([0.9, 0.8, 0.4, 0.2, 0.7, 0.3, 0.1, 0.05])
    thr = threshold_for_recall(y, score, 0.75)
    assert thr == RecallThreshold(threshold=0.4, recall=0.75, precision=0.75)
    assert threshold_for_recall(y, score, 1.0).threshold == 0.2
    truth = ["c", "c", "c", "n", "n", "n"]
    pred = ["c", "n", "n", "n", "n", "c"]
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8], [0.1, 0.9], [0.6, 0.4]])
    r = classification_metrics(
        truth, pred, classes=["c", "n"], proba=proba, positive="c", target_recall=1.0
    )
    assert r.positive.recall == pytest.approx(1 / 3) and r.positive.missed == 2
    assert r.positive.precision == pytest.approx(1 / 2)
    f2 = 5 * (0.5 * (1 / 3)) / (4 * 0.5 + 1 / 3)
    assert r.positive.f2 == pytest.approx(f2)
    assert r.positive.threshold_for_target_recall.threshold == pytest.approx(0.3)
    assert r.confusion == [[1, 2], [1, 2]]
    assert classification_metrics(["a", "b"], ["a", None], classes=["a", "b"]).accuracy == 0.5
