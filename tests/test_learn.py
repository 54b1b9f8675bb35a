"""Behaviour of vecstore.learn and vecstore.params on small numpy arrays: no store, no files,
no SQL. Complements tests/test_algorithms.py (which checks the estimators' results on toy
data) with the contracts of the building blocks: shapes, padding, copies, validation, edge
cases and the agreement of the fast paths with a brute-force reference."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vecstore.learn.active import choose_to_label, typicality
from vecstore.learn.cluster import FaissKMeans, SpectralFaissClustering
from vecstore.learn.curves import CurveFit, fit_learning_curve
from vecstore.learn.graph import knn_graph, knn_search
from vecstore.learn.knn import TopK, exact_knn, normalize
from vecstore.learn.metrics import (
    NONE,
    classification_metrics,
)
from vecstore.learn.propagation import LabelPropagation, entropy_confidence
from vecstore.learn.splits import draw_with_every_class
from vecstore.params import (
    ClusterParams,
    EvaluationParams,
    PlanRequest,
    PropagationParams,
    parse_size,
)


def unit_rows(n: int, d: int, seed: int = 0) -> np.ndarray:
    """n random unit vectors of dimension d, float32."""
    x = np.random.default_rng(seed).normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, d: int = 32, groups: int = 20, noise: float = 0.6, seed: int = 0):
    """n points around ``groups`` random centres: (x float32, group of each row)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(groups, d))
    g = rng.integers(0, groups, n)
    return (centres[g] + noise * rng.normal(size=(n, d))).astype(np.float32), g


def brute_force(q: np.ndarray, db: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k inner products by a full sort: the reference for the FAISS searches."""
    s = q.astype(np.float64) @ db.astype(np.float64).T
    idx = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, idx, axis=1), idx


# --- knn.normalize -------------------------------------------------------------------------


def test_normalize_gives_unit_rows_and_keeps_zero_rows():
    x = np.array([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0], [1e-3, 0.0, 0.0], [-2.0, 0.0, 2.0]])
    out = normalize(x)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), [1, 0, 1, 1], atol=1e-6)
    np.testing.assert_allclose(out[0], [0.6, 0.8, 0.0], atol=1e-7)
    assert (out[1] == 0).all() and np.isfinite(out).all()
    np.testing.assert_array_equal(x[1], 0)  # the float64 input is left as it was


def test_normalize_returns_an_already_unit_float32_array_without_copying():
    x = unit_rows(50, 8)
    x[7] = 0  # zero rows count as normalised too
    out = normalize(x)
    assert out is x
    assert np.shares_memory(normalize(x, inplace=True), x)


def test_normalize_copies_unless_inplace():
    x = np.random.default_rng(1).normal(size=(20, 5)).astype(np.float32) * 3
    before = x.copy()
    out = normalize(x)
    assert not np.shares_memory(out, x)
    np.testing.assert_array_equal(x, before)  # not inplace: the input is untouched

    back = normalize(x, inplace=True)
    assert back is x  # the caller's array, scaled in place
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(x, out, atol=1e-7)


# --- knn.exact_knn -------------------------------------------------------------------------


def test_exact_knn_matches_a_numpy_brute_force():
    q, db = unit_rows(40, 16, seed=2), unit_rows(300, 16, seed=3)
    sims, idx = exact_knn(q, db, 7)
    ref_sims, ref_idx = brute_force(q, db, 7)
    assert sims.shape == idx.shape == (40, 7)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(sims, ref_sims, atol=1e-5)
    assert (np.diff(sims, axis=1) <= 0).all()  # best first


def test_exact_knn_exclude_removes_each_querys_own_row():
    db = unit_rows(100, 8, seed=4)
    rows = np.array([0, 5, 17, 99])
    sims, idx = exact_knn(db[rows], db, 5, exclude=rows)
    assert not (idx == rows[:, None]).any()
    # the same as the brute force's ranks 2..6 (rank 1 is the row itself, similarity 1)
    _, ref = brute_force(db[rows], db, 6)
    assert (ref[:, 0] == rows).all()
    np.testing.assert_array_equal(idx, ref[:, 1:])
    assert (sims < 1 - 1e-6).all()
    # exclude may name a row that is not among the best: then the k best come back unchanged
    far = np.argsort(db[rows] @ db.T, axis=1)[:, 0]  # each query's least similar row
    np.testing.assert_array_equal(exact_knn(db[rows], db, 5, exclude=far)[1], ref[:, :5])


def test_exact_knn_with_k_beyond_the_database_pads_with_minus_one_and_zero():
    db = unit_rows(4, 6, seed=5)
    sims, idx = exact_knn(db, db, 10)  # width min(k, len(db)), every row found
    assert idx.shape == (4, 4)
    assert (np.sort(idx, axis=1) == np.arange(4)).all()
    sims, idx = exact_knn(db, db, 10, exclude=np.arange(4))  # 3 others for each: one pad
    assert idx.shape == sims.shape == (4, 4)
    assert (idx[:, 3] == -1).all() and (sims[:, 3] == 0).all()
    assert (idx[:, :3] >= 0).all() and not (idx == np.arange(4)[:, None]).any()
    assert sims.dtype == np.float32


def test_exact_knn_with_no_queries_or_no_database():
    db = unit_rows(10, 4)
    sims, idx = exact_knn(np.empty((0, 4), np.float32), db, 3)
    assert sims.shape == idx.shape == (0, 3)
    sims, idx = exact_knn(db[:2], np.empty((0, 4), np.float32), 3)
    assert sims.shape == idx.shape == (2, 0)


# --- knn.TopK ------------------------------------------------------------------------------


def test_topk_merged_block_by_block_equals_one_block():
    rng = np.random.default_rng(6)
    m, c, k = 12, 90, 5
    scores = rng.normal(size=(m, c)).astype(np.float32)
    ids = rng.permutation(1000)[:c][None, :].repeat(m, axis=0)
    whole = TopK(m, k)
    whole.push(np.arange(m), scores, ids)
    blocks = TopK(m, k)
    for cols in np.array_split(np.arange(c), 7):  # uneven blocks, some smaller than k
        blocks.push(np.arange(m), scores[:, cols], ids[:, cols])
    s1, i1 = whole.result()
    s2, i2 = blocks.result()
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(s1, s2)
    ref = np.argsort(-scores, axis=1)[:, :k]
    np.testing.assert_array_equal(i1, np.take_along_axis(ids, ref, axis=1))
    assert (np.diff(s1, axis=1) <= 0).all()  # decreasing similarity


def test_topk_pushing_a_subset_of_rows_and_unfilled_slots():
    top = TopK(3, 4)
    top.push(np.array([0]), np.array([[0.2, 0.9]], np.float32), np.array([[7, 3]]))
    top.push(np.array([2]), np.array([[0.5]], np.float32), np.array([[1]]))
    top.push(np.array([0]), np.array([[0.4]], np.float32), np.array([[8]]))
    sims, ids = top.result()
    np.testing.assert_array_equal(ids, [[3, 8, 7, -1], [-1, -1, -1, -1], [1, -1, -1, -1]])
    np.testing.assert_allclose(sims, [[0.9, 0.4, 0.2, 0], [0, 0, 0, 0], [0.5, 0, 0, 0]])
    assert sims.dtype == np.float32 and np.isfinite(sims).all()


# --- graph.knn_search ----------------------------------------------------------------------


def test_knn_search_below_exact_max_is_exact():
    x, _ = clustered(300, d=16)
    sims, nbrs, stats = knn_search(x, 6, return_stats=True)
    assert stats.method == "exact" and stats.recall == 1.0 and (stats.n, stats.k) == (300, 6)
    xn = normalize(x)
    ref_sims, ref = brute_force(xn, xn, 7)
    assert (ref[:, 0] == np.arange(300)).all() and (nbrs != ref[:, :1]).all()  # itself left out
    # exact: each neighbour as close as the true one of its rank (float32 rounding, ~1e-7,
    # may swap two that tie closer than that on another CPU), nearly all the very same
    found = np.take_along_axis(xn.astype(np.float64) @ xn.astype(np.float64).T, nbrs, axis=1)
    np.testing.assert_allclose(found, ref_sims[:, 1:], atol=1e-5)
    np.testing.assert_allclose(sims, ref_sims[:, 1:], atol=1e-5)
    assert (nbrs == ref[:, 1:]).mean() > 0.99
    assert stats.to_dict()["method"] == "exact"


@pytest.mark.parametrize(
    "n, tolerance",
    [
        (1000, 1e-3),  # the recall sample is every row: the join's recall is the measured one
        (3000, 0.02),  # a 1,000-row sample of 3,000
    ],
)
def test_ivf_self_join_reaches_the_recall_it_reports(n, tolerance):
    target, k = 0.9, 10
    x, _ = clustered(n)
    sims, nbrs, stats = knn_search(x, k, exact_max=n // 2, target_recall=target, return_stats=True)
    assert stats.method == "ivf-self-join" and stats.n == n and stats.k == k
    assert stats.nlist >= 2 and 1 <= stats.nprobe <= stats.nlist
    assert stats.sample == min(n, 1000) and stats.recall >= target
    assert stats.nprobe < stats.nlist  # an approximate search, not a scan of every cell
    xn = normalize(x)
    _, truth = exact_knn(xn, xn, k, exclude=np.arange(n))
    recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(nbrs, truth)])
    assert recall >= target - tolerance
    assert recall == pytest.approx(stats.recall, abs=tolerance)
    # what it returns are real neighbours: no self, no repeat, true cosines, best first
    assert (nbrs >= 0).all() and not (nbrs == np.arange(n)[:, None]).any()
    assert all(len(set(r)) == k for r in nbrs)
    true_sims = np.einsum("ij,ikj->ik", xn, xn[nbrs])
    np.testing.assert_allclose(sims, true_sims, atol=1e-5)
    assert (np.diff(sims, axis=1) <= 1e-6).all()


def test_knn_graph_passes_exact_max_on_to_the_search():
    x, _ = clustered(800, d=16)
    w, stats = knn_graph(x, 5, exact_max=100, return_stats=True)
    assert stats.method == "ivf-self-join"
    assert (w != w.T).nnz == 0 and w.diagonal().sum() == 0 and w.shape == (800, 800)


# --- params --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"alpha": 1.0}, "alpha"),
        ({"alpha": 0.0}, "alpha"),
        ({"n_neighbors": 0}, "n_neighbors must be at least 1"),
        ({"gamma": 0}, "gamma"),
        ({"gamma": -1.0}, "gamma"),
    ],
)
def test_propagation_params_reject(kw, match):
    with pytest.raises(ValueError, match=match):
        PropagationParams(**kw)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"method": "dbscan"}, "is not kmeans or spectral"),
        ({"k": 1}, "at least 2"),
        ({"k": 4, "k_range": (2, 6)}, "not both"),
        ({"k_range": (5, 3)}, "LO <= HI"),
        ({"k_range": (1, 3)}, "LO <= HI"),
        ({"n_init": 0}, "at least 1"),
        ({"n_neighbors": 0}, "at least 1"),
    ],
)
def test_cluster_params_reject(kw, match):
    with pytest.raises(ValueError, match=match):
        ClusterParams(**kw)


def test_cluster_params_ks():
    assert ClusterParams().ks() == range(2, 21)
    assert list(ClusterParams(k_range=(3, 5)).ks()) == [3, 4, 5]
    assert list(ClusterParams(k_range=(4, 4)).ks()) == [4]


@pytest.mark.parametrize(
    "kw",
    [
        {"target_recall": 0},
        {"target_recall": 1.01},
        {"target_accuracy": 0},
        {"folds": 0},
        {"repeats": 0},
        {"folds": 1},
        {"confidence": 0},
        {"confidence": 1},
    ],
)
def test_evaluation_params_reject(kw):
    with pytest.raises(ValueError):
        EvaluationParams(**kw)


def test_evaluation_params_accept_the_bounds_and_describe_a_run():
    p = EvaluationParams(target_recall=1.0, target_accuracy=1.0, repeats=1, positive="c")
    assert p.run_params("holdout") == {
        "mode": "holdout",
        "positive": "c",
        "target_recall": 1.0,
        "target_accuracy": 1.0,
        "repeats": 1,
        "seed": 0,
        "folds": 5,
        "confidence": 0.9,
        "group_by": None,
    }


@pytest.mark.parametrize(
    "kw", [{"images": 0}, {"eur_per_label": 0}, {"eur_per_label": -1}, {"budget_eur": -0.01}]
)
def test_plan_request_rejects(kw):
    base = {"images": 1000, "budget_eur": 100.0, "eur_per_label": 1.0}
    PlanRequest(**base)  # the base itself is fine
    with pytest.raises(ValueError):
        PlanRequest(**{**base, **kw})


@pytest.mark.parametrize(
    "text, size",
    [
        ("8G", 8 * 2**30),
        ("512MiB", 512 * 2**20),
        ("512M", 512 * 2**20),
        ("2.5GiB", int(2.5 * 2**30)),
        ("1.5KB", 1536),
        ("1T", 2**40),
        ("1000000", 1_000_000),
        ("64b", 64),
        (" 8g ", 8 * 2**30),
    ],
)
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "G", "eight", "8X", "8GG", "0", "-1G", "nan"])
def test_parse_size_rejects_bad_input(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_parse_size_rejects_infinity_with_a_value_error():
    with pytest.raises(ValueError):
        parse_size("inf")


def test_params_to_dict_round_trip_through_json():
    p = PropagationParams(n_neighbors=7, alpha=0.9, gamma=2.0)
    assert PropagationParams(**json.loads(json.dumps(p.to_dict()))) == p
    c = ClusterParams(k_range=(3, 7), method="spectral", n_neighbors=5, n_init=2, seed=9)
    d = json.loads(json.dumps(c.to_dict()))
    assert d["k_range"] == [3, 7]
    assert ClusterParams(**{**d, "k_range": tuple(d["k_range"])}) == c
    plain = ClusterParams(k=4)
    assert ClusterParams(**plain.to_dict()) == plain and plain.to_dict()["k_range"] is None


# --- propagation ---------------------------------------------------------------------------


def two_groups(spread: float, seed: int = 1):
    """40 + 40 rows around two orthogonal directions; 10 seeds of class 0, one of class 1."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(c, spread, size=(40, 4)) for c in ([1, 0, 0, 0], [0, 1, 0, 0])])
    y = np.repeat([0, 1], 40)
    seeds = np.full(80, -1)
    seeds[:10] = 0
    seeds[40] = 1
    return x.astype(np.float32), y, seeds


@pytest.mark.parametrize(
    "attr, value", [("alpha", 1.0), ("alpha", -0.5), ("n_neighbors", 0), ("gamma", 0.0)]
)
def test_label_propagation_checks_its_parameters_at_fit(attr, value):
    x, _, seeds = two_groups(0.25)
    lp = LabelPropagation()
    setattr(lp, attr, value)  # scikit-learn style: set after construction, checked by fit
    with pytest.raises(ValueError):
        lp.fit(x, seeds)


def test_label_propagation_rejects_mismatched_or_unlabeled_input():
    x, _, seeds = two_groups(0.25)
    with pytest.raises(ValueError, match="rows"):
        LabelPropagation().fit(x, seeds[:-1])
    with pytest.raises(ValueError, match="no labeled rows"):
        LabelPropagation().fit(x, np.full(80, -1))


def test_class_balancing_keeps_a_lone_seed_from_being_flooded():
    """One seed of class 1 against ten of class 0, overlapping groups: unbalanced, the ten
    seeds' mass wins far into group 1; balanced, each class's seeds weigh the same."""
    x, y, seeds = two_groups(0.4)
    balanced = LabelPropagation(n_neighbors=8).fit(x, seeds)
    unbalanced = LabelPropagation(n_neighbors=8, class_balanced=False).fit(x, seeds)
    n0_bal = int((balanced.transduction_ == 0).sum())
    n0_unbal = int((unbalanced.transduction_ == 0).sum())
    assert n0_unbal > n0_bal + 10  # the big class takes more rows without balancing
    assert (balanced.transduction_ == y).mean() > (unbalanced.transduction_ == y).mean() + 0.2
    assert (balanced.transduction_ == y).mean() > 0.9
    for lp in (balanced, unbalanced):
        assert lp.reached_.all() and lp.label_distributions_.shape == (80, 2)
        np.testing.assert_allclose(lp.label_distributions_.sum(axis=1), 1.0, atol=1e-6)
        assert (lp.label_distributions_ >= 0).all()
        assert list(lp.classes_) == [0, 1] and len(lp.n_iter_) == 2
        assert ((lp.confidence_ >= 0) & (lp.confidence_ <= 1)).all()


def test_entropy_confidence_is_the_same_in_chunks():
    rng = np.random.default_rng(8)
    p = rng.dirichlet(np.full(5, 0.3), size=101)
    p[::9] = 0  # empty rows
    p[3] = [0, 1, 0, 0, 0]  # one-hot
    whole = entropy_confidence(p)
    for chunk in (1, 2, 7, 100):
        np.testing.assert_allclose(entropy_confidence(p, chunk=chunk), whole, rtol=1e-12)
    assert whole[3] == 1.0 and (whole[::9] == 0).all()
    assert ((whole >= 0) & (whole <= 1)).all()
    # a single class: 1 where there is any mass, 0 for an empty row
    np.testing.assert_array_equal(entropy_confidence(np.array([[0.3], [0.0]]), chunk=1), [1, 0])


# --- splits.draw_with_every_class ----------------------------------------------------------

LABELS = np.array(["a"] * 20 + ["b"] * 5 + ["c"] * 2 + ["d"])
CLASSES = ["a", "b", "c", "d"]


@pytest.mark.parametrize("m", [4, 5, 11, 27, 28])
def test_draw_with_every_class_partitions_the_rows(m):
    drawn, hidden = draw_with_every_class(LABELS, CLASSES, m, np.random.default_rng(3))
    assert len(drawn) == m and len(set(drawn.tolist())) == m
    assert set(LABELS[drawn]) == set(CLASSES)  # every class drawn at least once
    assert sorted([*drawn.tolist(), *hidden.tolist()]) == list(range(len(LABELS)))
    assert [LABELS[i] for i in drawn[:4]] == CLASSES  # the first of each class first


def test_draw_with_every_class_is_deterministic_for_a_seed():
    a = draw_with_every_class(LABELS, CLASSES, 9, np.random.default_rng(11))
    b = draw_with_every_class(LABELS, CLASSES, 9, np.random.default_rng(11))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = draw_with_every_class(LABELS, CLASSES, 9, np.random.default_rng(12))
    assert not np.array_equal(a[0], c[0])  # another seed, another draw


def test_draw_with_every_class_refuses_fewer_rows_than_classes():
    with pytest.raises(ValueError, match="one of each of 4 classes"):
        draw_with_every_class(LABELS, CLASSES, 2, np.random.default_rng(0))


# --- curves --------------------------------------------------------------------------------


def test_fit_learning_curve_recovers_a_known_power_law():
    m = np.array([5, 10, 20, 40, 80, 160, 320, 640])
    a, b, c = 0.93, 0.7, 0.45
    fit = fit_learning_curve(m, a - b * m**-c)
    assert fit is not None
    assert (fit.a, fit.b, fit.c) == pytest.approx((a, b, c), rel=1e-3)
    assert fit.rmse < 1e-6
    assert fit.predict(1000) == pytest.approx(a - b * 1000**-c, abs=1e-4)
    spread = np.linspace(0.05, 0.01, len(m))  # weights do not move an exact fit
    assert fit_learning_curve(m, a - b * m**-c, spread).c == pytest.approx(c, rel=1e-3)


@pytest.mark.filterwarnings("ignore::scipy.optimize.OptimizeWarning")  # 3 points, 3 params
def test_fit_learning_curve_needs_three_distinct_sizes():
    assert fit_learning_curve(np.array([10, 10, 20, 20]), np.array([0.5, 0.6, 0.7, 0.7])) is None
    assert fit_learning_curve(np.array([10, 20]), np.array([0.5, 0.7])) is None
    assert fit_learning_curve(np.array([10, 20, 40]), np.array([0.5, 0.7, 0.8])) is not None


def test_curve_fit_predict_is_clipped_to_the_unit_interval():
    assert CurveFit(a=1.4, b=0.1, c=1.0, rmse=0).predict(100) == 1.0
    assert CurveFit(a=0.5, b=10.0, c=1.0, rmse=0).predict(1) == 0.0
    assert CurveFit(a=0.9, b=0.5, c=1.0, rmse=0).predict(10) == pytest.approx(0.85)


def test_curve_fit_dict_round_trip():
    fit = CurveFit(a=0.9, b=0.4, c=0.3, rmse=0.01)
    assert CurveFit.from_dict(json.loads(json.dumps(fit.to_dict()))) == fit
    assert set(fit.to_dict()) == {"a", "b", "c", "rmse"}
    assert CurveFit.from_dict(None) is None and CurveFit.from_dict({}) is None
    assert CurveFit.from_dict({"a": 1, "b": 0.5, "c": 0.2}).rmse == 0.0  # older records


# --- metrics -------------------------------------------------------------------------------

TRUTH = ["c", "c", "c", "n", "n", "n"]
PRED = ["c", "n", None, "n", "n", "c"]


def test_classification_scores_to_dict_shape():
    d = classification_metrics(TRUTH, PRED, classes=["c", "n"]).to_dict()
    assert set(d) == {"n", "accuracy", "balanced_accuracy", "per_class", "confusion"}
    assert set(d["confusion"]) == {"labels", "matrix"}
    assert d["n"] == 6 and d["accuracy"] == pytest.approx(3 / 6)
    assert [c["label"] for c in d["per_class"]] == ["c", "n"]
    assert set(d["per_class"][0]) == {"label", "precision", "recall", "f1", "support"}
    json.dumps(d)  # plain types only
    with_pos = classification_metrics(TRUTH, PRED, classes=["c", "n"], positive="c").to_dict()
    assert set(with_pos) == set(d) | {"positive"}


def test_positive_scores_drop_what_needs_probabilities():
    r = classification_metrics(TRUTH, PRED, classes=["c", "n"], positive="c")
    pos = r.positive.to_dict()
    assert set(pos) == {"label", "recall", "precision", "f2", "missed"}
    assert pos["label"] == "c" and pos["missed"] == 2 and pos["recall"] == pytest.approx(1 / 3)
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.5, 0.5], [0.2, 0.8], [0.1, 0.9], [0.6, 0.4]])
    full = classification_metrics(TRUTH, PRED, classes=["c", "n"], proba=proba, positive="c")
    assert {"roc_auc", "pr_curve", "target_recall", "threshold_for_target_recall"} <= set(
        full.positive.to_dict()
    )
    with pytest.raises(ValueError, match="positive class"):
        classification_metrics(TRUTH, PRED, classes=["c", "n"], positive="x")


def test_a_missing_prediction_is_the_none_column_of_the_confusion_matrix():
    r = classification_metrics(TRUTH, PRED, classes=["c", "n"])
    assert r.confusion_labels == ["c", "n", NONE] and NONE == "<none>"
    assert r.confusion == [[1, 1, 1], [1, 2, 0], [0, 0, 0]]
    assert r.per_class[0].recall == pytest.approx(1 / 3)  # the unreached "c" counts as missed
    # no missing prediction: no extra column
    full = classification_metrics(TRUTH, ["c", "n", "c", "n", "n", "c"], classes=["c", "n"])
    assert full.confusion_labels == ["c", "n"]


def twins() -> tuple[np.ndarray, np.ndarray]:
    """30 random unit rows, each present twice (rows i and i + 30); a third of them labeled."""
    base = unit_rows(30, 8, seed=0)
    return np.concatenate([base, base]), np.arange(0, 30, 3)


def max_similarity(x: np.ndarray, rows: list[int]) -> float:
    s = x[rows] @ x[rows].T
    np.fill_diagonal(s, -1)
    return float(s.max())


def test_choose_to_label_skips_labeled_rows_and_near_duplicates():
    x, labeled = twins()
    picks = choose_to_label(x, labeled, 10, seed=0)
    rows = [r for r, _, _ in picks]
    assert 0 < len(picks) <= 10 and len(set(rows)) == len(rows)
    assert not set(rows) & set(labeled.tolist())
    assert max_similarity(x, [*labeled.tolist(), *rows]) < 0.995
    assert all(isinstance(r, int) and isinstance(c, int) for r, _, c in picks)
    # the data bites: without the duplicate check a labeled row's twin is picked
    loose = [r for r, _, _ in choose_to_label(x, labeled, 10, duplicate_similarity=1.5, seed=0)]
    assert set(loose) & set((labeled + 30).tolist())


def test_choose_to_label_never_more_than_n_or_than_the_unlabeled_rows():
    x, labeled = twins()
    assert len(choose_to_label(x, labeled, 3, seed=0)) <= 3
    x = unit_rows(12, 6, seed=1)
    picks = choose_to_label(x, np.arange(9), 50, seed=0)  # only 3 rows left to label
    # n drops to 3 clusters of all 12 rows, one pick a cluster: up to 3, none of them labeled
    assert 1 <= len(picks) <= 3 and {r for r, _, _ in picks} <= {9, 10, 11}
    assert choose_to_label(x, np.arange(12), 5) == []


def test_choose_to_label_cold_start_gives_typical_rows_of_distinct_clusters():
    x = unit_rows(60, 8, seed=2)
    picks = choose_to_label(x, np.array([], dtype=np.int64), 6, seed=0)
    assert len(picks) == 6 and len({c for _, _, c in picks}) == 6
    assert all("which has no label yet" in why for _, why, _ in picks)


def test_choose_to_label_takes_the_least_certain_row_of_a_labeled_cluster():
    """Two groups, a label in group A only: A yields its lowest-margin row (even though it is
    A's least typical), B, unlabeled, its most typical row whatever its margins."""
    rng = np.random.default_rng(4)
    a = normalize(np.array([1.0, 0, 0, 0, 0, 0]) + 0.1 * rng.normal(size=(25, 6)))
    b = normalize(np.array([0, 0, 0, 1.0, 0, 0]) + 0.1 * rng.normal(size=(25, 6)))
    x = np.concatenate([a, b])
    typ = typicality(x)
    in_a, in_b = np.arange(25), np.arange(25, 50)
    unsure_a = int(in_a[1:][np.argmin(typ[in_a[1:]])])  # row 0 is the labeled one
    unsure_b = int(in_b[np.argmin(typ[in_b])])
    margin = np.full(50, 0.9)
    margin[unsure_a] = 0.01
    margin[unsure_b] = 0.001  # lower still, but B has no label: typicality decides there
    picks = choose_to_label(x, np.array([0]), 2, margin=margin, seed=0)
    by_row = {r: why for r, why, _ in picks}
    assert set(by_row) == {unsure_a, int(in_b[np.argmax(typ[in_b])])}
    assert "least certain pseudo-label" in by_row[unsure_a] and "margin 0.010" in by_row[unsure_a]
    (why_b,) = [why for r, why in by_row.items() if r != unsure_a]
    assert "has no label yet" in why_b
    # without margins the labeled cluster gives its most typical row, not called unlabeled
    plain = {r: why for r, why, _ in choose_to_label(x, np.array([0]), 2, seed=0)}
    top_a = int(in_a[1:][np.argmax(typ[in_a[1:]])])
    assert top_a in plain and "no label yet" not in plain[top_a]


def test_choose_to_label_duplicate_check_is_cosine_on_unnormalised_rows():
    x, labeled = twins()
    picks = choose_to_label(0.5 * x, labeled, 10, seed=0)
    rows = [r for r, _, _ in picks]
    assert max_similarity(x, [*labeled.tolist(), *rows]) < 0.995


# --- cluster -------------------------------------------------------------------------------


def test_kmeans_predict_agrees_with_labels_and_ignores_the_scale_of_rows():
    """Groups of different spreads give centroids of different norms: an L2 search of rows
    that were not normalised would then depend on their scale."""
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(5, 8))
    group = rng.integers(0, 5, 300)
    noise = np.array([0.05, 0.2, 0.5, 0.8, 1.2])[group, None]
    x = (centres[group] + noise * rng.normal(size=(300, 8))).astype(np.float32)
    km = FaissKMeans(5, n_init=2, seed=3).fit(x)
    np.testing.assert_array_equal(km.predict(x), km.labels_)
    scale = np.geomspace(0.01, 100, 300)[rng.permutation(300), None].astype(np.float32)
    np.testing.assert_array_equal(km.predict(x * scale), km.labels_)  # cosine geometry
    assert km.labels_.dtype == np.int64 and set(km.labels_.tolist()) == set(range(5))
    assert (np.linalg.norm(km.cluster_centers_, axis=1) <= 1 + 1e-5).all()  # means of unit rows


@pytest.mark.parametrize("k", [1, 30, 31])
def test_spectral_rejects_a_number_of_clusters_outside_two_to_n_minus_one(k):
    x, _ = clustered(30, d=8, groups=3)
    with pytest.raises(ValueError, match="n_clusters"):
        SpectralFaissClustering(k, n_neighbors=5).fit(x)
