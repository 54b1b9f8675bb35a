"""The labeling methods compared on the same folds, `propagate --method`, and the review flag
calibrated on out-of-fold scores (issue 13, items 3 and 5)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

from vecstore.learn.methods import KNNVote, LogisticProbe, Spreading, make_method
from vecstore.learn.review import calibrate_review, decision_margin, flagged, rank_within
from vecstore.params import LABEL_METHODS, PropagationParams

from .conftest import make_binary_scans


def _digits(per_class: int, seed: int = 0):
    x, t = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    y = np.full(len(t), -1)
    for c in range(10):
        y[rng.choice(np.flatnonzero(t == c), per_class, replace=False)] = c
    return x.astype(np.float32), t, y


# ---- the review flag ---------------------------------------------------------------------


def test_decision_margin_by_argmax_and_by_a_threshold():
    p = np.array([[0.7, 0.3], [0.45, 0.55], [0.0, 0.0]])
    d, m = decision_margin(p)
    assert d.tolist() == [0, 1, -1] and m == pytest.approx([0.4, 0.1, 0.0])
    # positive = column 1 when p >= 0.2: both rows positive, margin 2 |p - t|
    d, m = decision_margin(p, pos_j=1, threshold=0.2)
    assert d.tolist() == [1, 1, -1] and m == pytest.approx([0.2, 0.7, 0.0])


def test_rank_within_is_the_mid_rank_share():
    ref = np.array([0.1, 0.2, 0.2, 0.4])
    assert rank_within(np.array([0.0, 0.2, 0.5]), ref) == pytest.approx([0.0, 0.5, 1.0])


def test_calibration_flags_the_least_sure_share_that_leaves_the_target():
    """Errors only among the lowest 20 % of ranks: flagging about that share leaves the rest
    right, and the expected accuracy of the rest is what the fits say (never above 1)."""
    rng = np.random.default_rng(0)
    rank = rng.uniform(size=2000)
    correct = (rank > 0.2) | (rng.uniform(size=2000) < 0.5)  # 90 % right overall
    cal = calibrate_review(rank, correct, target=0.97)
    assert 0.1 <= cal.flag_share <= 0.3
    assert cal.expected_accuracy >= 0.97 and cal.accuracy_unflagged_none == pytest.approx(
        correct.mean(), abs=0.03
    )
    truth_rest = correct[rank >= cal.flag_share].mean()
    assert truth_rest >= 0.96
    assert cal.curve[0][0] == 0.0 and len(cal.curve) == 20


def test_calibration_declines_when_no_share_reaches_the_target_and_flags_nothing_when_right():
    rng = np.random.default_rng(1)
    rank = rng.uniform(size=500)
    coin = rng.uniform(size=500) < 0.6  # 60 % right whatever the rank
    assert calibrate_review(rank, coin, 0.97).flag_share is None
    right = calibrate_review(rank, np.ones(500, bool), 0.97)
    assert right.flag_share == 0.0 and right.expected_accuracy == 1.0


def test_flagged_marks_the_share_least_sure_and_never_everything_by_default():
    m = np.linspace(0, 1, 100)
    f = flagged(m, 0.3)
    assert f.sum() == 30 and f[:30].all()
    assert flagged(m, None).all() and not flagged(m, 0.0).any()
    # two classes with flat distributions (margins all tiny): still the share, not all
    assert flagged(m * 0.01, 0.3).sum() == 30


# ---- the methods --------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(LABEL_METHODS))
def test_every_method_gives_distributions_and_keeps_the_seeds(name):
    x, t, y = _digits(3)
    est = make_method(name, PropagationParams()).fit(x, y)
    p = est.label_distributions_
    assert p.shape == (len(x), 10)
    reached = p.sum(axis=1) > 0
    assert np.allclose(p[reached].sum(axis=1), 1, atol=1e-5)
    seeds = y >= 0
    if name != "propagation" and name != "propagation-unbalanced":
        assert (est.transduction_[seeds] == y[seeds]).all()  # the expert labels stand
    u = ~seeds & reached
    assert (est.transduction_[u] == t[u]).mean() > 0.6  # far above chance (0.1)


def test_knn_vote_is_the_weighted_vote_of_the_nearest_labels():
    x = np.array([[1, 0], [1, 0.1], [0, 1], [0.1, 1], [1, 0.05]], np.float32)
    y = np.array([0, 0, 1, 1, -1])
    est = KNNVote(n_neighbors=1).fit(x, y)
    assert est.transduction_.tolist() == [0, 0, 1, 1, 0]
    assert est.label_distributions_[4].tolist() == [1.0, 0.0]


def test_probe_and_spreading_refuse_what_they_cannot_do():
    x, _, y = _digits(1)
    one = np.where(y == 0, 0, -1)
    with pytest.raises(ValueError, match="two classes"):
        LogisticProbe().fit(x, one)
    import vecstore.learn.methods as methods

    small = methods.SPREADING_MAX_ROWS
    methods.SPREADING_MAX_ROWS = 100
    try:
        with pytest.raises(ValueError, match="small-set reference"):
            Spreading().fit(x, y)
    finally:
        methods.SPREADING_MAX_ROWS = small


# ---- through the store and the CLI --------------------------------------------------------


@pytest.fixture()
def binary_store(tmp_path, cli):
    root = make_binary_scans(tmp_path / "scans", 20, 40)
    assert cli("ingest", root, "--space", "hog", "--labels-from-folders").exit_code == 0
    return root


def test_compare_methods_scores_every_method_on_the_same_folds(binary_store, cli, monkeypatch):
    import vecstore.labeling.crossfit as crossfit

    folds_seen = []
    real = crossfit.cross_fit_folds

    def spy(labels, folds, seed, groups=None):
        out = list(real(labels, folds, seed, groups))
        folds_seen.append([tuple(test) for _, test in out])
        return iter(out)

    monkeypatch.setattr(crossfit, "cross_fit_folds", spy)
    r = cli("evaluate", "--compare-methods", "--positive", "cancer", "--json")
    assert r.exit_code == 0, r.output
    cmp_ = json.loads(r.stdout)
    assert [row["method"] for row in cmp_["rows"]] == list(LABEL_METHODS)
    assert len(folds_seen) == len(LABEL_METHODS) and all(f == folds_seen[0] for f in folds_seen)
    assert cmp_["positive"] == "cancer" and cmp_["criterion"] == "f2_pos"
    best = max(cmp_["rows"], key=lambda row: row["mean"]["f2_pos"])
    assert cmp_["best"] == best["method"]
    for row in cmp_["rows"]:
        assert set(row["mean"]) == {
            "accuracy",
            "balanced_accuracy",
            "recall_pos",
            "f2_pos",
            "roc_auc",
        }
        assert 0 <= row["mean"]["accuracy"] <= 1 and row["std"]["accuracy"] >= 0
    # the same seed gives the same table
    again = json.loads(
        cli("evaluate", "--compare-methods", "--positive", "cancer", "--json").stdout
    )
    assert again == cmp_
    text = cli("evaluate", "--compare-methods", "--positive", "cancer")
    assert "mean +/- std over the folds" in text.output and "label-spreading" in text.output
    assert f"best by f2_pos: {cmp_['best']}" in text.output


def test_propagate_method_is_used_and_recorded_and_auto_records_its_choice(binary_store, cli, db):
    r = cli("propagate", "--method", "knn", "--json")
    assert r.exit_code == 0, r.output
    prop = json.loads(r.stdout)
    assert prop["method"] == "knn" and prop["health"] is None and prop["graph"] is None
    params = json.loads(db("SELECT params FROM runs WHERE id=?", prop["run_id"])[0][0])
    assert params["method"] == "knn" and "graph" not in params
    r = cli("propagate", "--method", "auto")
    assert r.exit_code == 0, r.output
    assert "method auto:" in r.output and "best f2_pos out-of-fold" in r.output
    run = db("SELECT params FROM runs WHERE kind='propagate' ORDER BY id DESC LIMIT 1")[0][0]
    params = json.loads(run)
    chosen = params["chosen_by"]
    assert params["method"] == chosen["best"] and chosen["positive"] == "cancer"  # the rarer
    # evaluate scores the method the latest propagation used
    ev = json.loads(cli("evaluate", "--json").stdout)
    assert ev["method"] == chosen["best"]
    bad = cli("propagate", "--method", "magic")
    assert bad.exit_code == 2 and "magic" in bad.output


def test_binary_review_flag_is_a_share_not_everything(binary_store, tmp_path, cli):
    """Two classes, flat distributions: the flag marks the calibrated share of the least
    sure, not every image (the old fixed confidence cut flagged all of them)."""
    assert cli("propagate").exit_code == 0
    ev = json.loads(cli("evaluate", "--positive", "cancer", "--json").stdout)
    share = ev["review"]["flag_share"]
    r = cli("export", "-o", tmp_path / "x.csv")
    assert r.exit_code == 0, r.output
    df = pd.read_csv(tmp_path / "x.csv", keep_default_na=False)
    prop = df[df.source == "propagated"]
    if share is None:
        assert prop.needs_review.all() and "every pseudo-label" in r.output
    else:
        assert prop.needs_review.mean() == pytest.approx(share, abs=0.02)
        assert prop.needs_review.mean() < 1


def test_scores_rest_on_labels_vecstore_did_not_pick_and_report_the_others_apart(
    binary_store, cli, db
):
    """Suggested (actively chosen, harder) labels are scored apart: the estimate uses the
    folder labels only, and each way of choosing gets its own out-of-fold accuracy."""
    unl = sorted((binary_store / "unlabeled").iterdir())[:6]
    for i, path in enumerate(unl):
        label = "cancer" if i % 2 else "normal"
        r = cli("labels", "set", path, label, "--chosen", "suggested")
        assert r.exit_code == 0, r.output
    folder = db("SELECT COUNT(*) FROM labels WHERE chosen = 'folder'")[0][0]
    assert db("SELECT COUNT(*) FROM labels WHERE chosen = 'suggested'") == [(6,)]
    assert cli("propagate").exit_code == 0
    ev = json.loads(cli("evaluate", "--json").stdout)
    assert ev["scored"] == folder and ev["scored_on"] == "labels vecstore did not pick"
    by = {c["chosen"]: c for c in ev["by_chosen"]}
    assert set(by) == {"folder", "suggested"} and by["suggested"]["labels"] == 6
    assert by["folder"]["labels"] == folder
    assert by["folder"]["accuracy"] == pytest.approx(ev["accuracy"])
    text = cli("evaluate").output
    assert "labels chosen by suggested: 6, out-of-fold accuracy" in text


def test_transform_auto_keeps_the_best_out_of_fold_and_records_the_scores(binary_store, cli, db):
    r = cli("transform", "--space", "hog", "--auto", "--json")
    assert r.exit_code == 0, r.output
    done = json.loads(r.stdout)
    tried = done["chosen_by"]["tried"]
    assert [t["kind"] for t in tried] == ["raw", "center", "pca"]
    assert done["chosen_by"]["criterion"] == "f2_pos"  # two classes: the rarer one's F2
    best = max(tried, key=lambda t: t["score"])
    assert done["kind"] == best["kind"]
    stats = json.loads(db("SELECT stats FROM runs WHERE id=?", done["run_id"])[0][0])
    assert stats["chosen_by"]["tried"] == tried
    kept = db("SELECT kind FROM space_transforms")
    assert kept == ([] if done["kind"] == "raw" else [(done["kind"],)])
    text = cli("transform", "--space", "hog", "--auto")
    assert "auto chose" in text.output and "raw" in text.output
    both = cli("transform", "--space", "hog", "--auto", "--center")
    assert both.exit_code == 2 and "exactly one of" in both.output
