"""The recall promise's statistics against closed forms and against simulation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from vecstore.learn.guarantee import positives_needed, recall_promise


def test_positives_needed_is_the_closed_form():
    # 1 - 0.95**n >= 0.9  <=>  n >= log(0.1) / log(0.95) = 44.89
    assert positives_needed(0.95, 0.9) == 45
    assert positives_needed(0.9, 0.9) == 22  # log(0.1) / log(0.9) = 21.85
    assert positives_needed(0.99, 0.95) == 299  # log(0.05) / log(0.99) = 298.07


def test_at_the_edge_the_lowest_score_is_the_threshold_and_one_fewer_declines():
    scores = np.linspace(0.2, 0.9, 45)
    p = recall_promise(scores, 0.95, 0.9)
    assert p.rank == 1 and p.threshold == pytest.approx(0.2)
    assert p.holds_with == pytest.approx(1 - 0.95**45)  # 0.90056
    short = recall_promise(scores[1:], 0.95, 0.9)
    assert short.declined and short.threshold is None and short.rank is None
    assert short.holds_with == pytest.approx(1 - 0.95**44) and short.positives_needed == 45


def test_rank_two_matches_the_binomial_closed_form():
    # P(Binomial(n, a) >= 2) = 1 - (1 - a)**n - n a (1 - a)**(n - 1)
    a, conf = 0.1, 0.9

    def at_least_two(n):
        return 1 - (1 - a) ** n - n * a * (1 - a) ** (n - 1)

    def at_least_three(n):
        return at_least_two(n) - math.comb(n, 2) * a**2 * (1 - a) ** (n - 2)

    n = next(n for n in range(2, 200) if at_least_two(n) >= conf)  # 38
    assert at_least_three(n) < conf
    scores = np.arange(n) / n
    p = recall_promise(scores[::-1], 1 - a, conf)  # any order
    assert p.rank == 2 and p.threshold == pytest.approx(scores[1])
    assert p.holds_with == pytest.approx(at_least_two(n))


def test_the_promise_holds_at_the_stated_rate_in_simulation():
    """Positives score Beta(2, 5) (many low): the true recall of the threshold is the share of
    that distribution above it; it must reach the target in >= 90 % of draws."""
    from scipy.stats import beta

    rng = np.random.default_rng(7)
    held, draws = 0, 2000
    for _ in range(draws):
        p = recall_promise(rng.beta(2, 5, 120), 0.95, 0.9)
        held += beta.sf(p.threshold, 2, 5) >= 0.95
    rate = held / draws
    assert rate >= 0.9 - 3 * math.sqrt(0.09 / draws), rate
    # and not a trivially low threshold: the rank used is the largest that holds
    assert recall_promise(rng.beta(2, 5, 120), 0.95, 0.9).rank == 3


@pytest.mark.parametrize(("target", "confidence"), [(1.0, 0.9), (0.0, 0.9), (0.9, 1.0)])
def test_bad_parameters_are_refused(target, confidence):
    with pytest.raises(ValueError):
        recall_promise(np.ones(10), target, confidence)


def _binary_store(tmp_path, cli, per_class: int):
    from .conftest import make_binary_scans

    root = make_binary_scans(tmp_path / "scans", per_class, 20)
    r = cli("ingest", root, "--space", "pixels", "--labels-from-folders")
    assert r.exit_code == 0, r.output


def test_evaluate_declines_the_promise_and_names_the_labels_needed(tmp_path, cli, db):
    _binary_store(tmp_path, cli, 12)  # 12 cancer: 45 needed for 0.95 at 90 %
    r = cli("evaluate", "--positive", "cancer", "--target-recall", "0.95")
    assert r.exit_code == 0, r.output
    assert "no recall promise: 12 expert labels 'cancer' are too few" in r.output
    assert "label at least 33 more 'cancer' images (45 needed)" in r.output
    [(stats,)] = db("SELECT stats FROM runs WHERE kind = 'evaluate'")
    promise = json.loads(stats)["recall_promise"]
    assert promise["threshold"] is None and promise["positives"] == 12
    assert promise["positives_needed"] == 45


def test_evaluate_promises_a_threshold_from_out_of_fold_scores(tmp_path, cli, db):
    _binary_store(tmp_path, cli, 25)  # 25 cancer: enough for recall 0.9 at 90 % (22 needed)
    r = cli("evaluate", "--positive", "cancer", "--target-recall", "0.9", "--json")
    assert r.exit_code == 0, r.output
    promise = json.loads(r.stdout.splitlines()[0])["recall_promise"]
    assert promise["positives"] == 25 and promise["rank"] == 1
    assert 0 <= promise["threshold"] <= 1 and promise["holds_with"] >= 0.9
    text = cli("evaluate", "--positive", "cancer", "--target-recall", "0.9").output
    assert f"p(cancer) >= {promise['threshold']:.4f}" in text
    assert "from 25 out-of-fold 'cancer' scores" in text


def test_cross_fit_folds_never_split_a_group_and_test_every_row_once():
    from vecstore.learn.splits import cross_fit_folds

    rng = np.random.default_rng(3)
    groups = rng.integers(0, 40, 300)  # 40 patients, several scans each
    labels = np.where(groups % 3 == 0, "cancer", "normal")  # a patient's scans agree
    tested = []
    for train, test in cross_fit_folds(labels, 5, seed=0, groups=groups):
        assert not set(groups[train]) & set(groups[test])  # no patient on both sides
        tested.extend(test)
    assert sorted(tested) == list(range(300))
    plain = list(cross_fit_folds(labels, 5, seed=0))
    assert len(plain) == 5 and any(
        set(groups[tr]) & set(groups[te]) for tr, te in plain
    )  # without groups, patients are split: the bias --group-by removes


def test_evaluate_group_by_keeps_patients_whole_and_refuses_a_missing_column(
    tmp_path, cli, db, monkeypatch
):
    from vecstore.learn import splits

    from .conftest import make_binary_scans

    root = make_binary_scans(tmp_path / "scans", 25, 10)
    meta = tmp_path / "meta.csv"
    names = sorted(p.name for p in root.rglob("*.png"))
    meta.write_text(
        "filename,patient_id\n" + "".join(f"{n},P{i // 3}\n" for i, n in enumerate(names))
    )
    args = ["--space", "pixels", "--labels-from-folders", "--metadata", meta]
    assert cli("ingest", root, *args).exit_code == 0
    seen = []
    real = splits.cross_fit_folds
    monkeypatch.setattr(
        "vecstore.labeling.crossfit.cross_fit_folds",
        lambda *a, **k: seen.append(a[3]) or real(*a, **k),
    )
    r = cli(
        "evaluate", "--positive", "cancer", "--target-recall", "0.9", "--group-by", "patient_id"
    )
    assert r.exit_code == 0, r.output
    assert seen and len(seen[0]) == 50 and set(seen[0]) <= {f"P{i}" for i in range(30)}
    [(params,)] = db("SELECT params FROM runs WHERE kind = 'evaluate'")
    assert json.loads(params)["group_by"] == "patient_id"
    r = cli("evaluate", "--positive", "cancer", "--group-by", "ward")
    assert r.exit_code == 1 and "50 of 50 labeled images have no 'ward'" in r.output
