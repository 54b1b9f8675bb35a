"""Labels, clustering, propagation, evaluation and export through the CLI, on real digits."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pandas as pd
import pytest

from .conftest import make_binary_scans


def _ready(cli, digits, *spaces):
    args = ["ingest", digits, "--labels-from-folders"]
    for s in spaces or ("pixels",):
        args += ["--space", s]
    r = cli(*args)
    assert r.exit_code == 0, r.output


def test_cluster_stores_assignments_and_scores_against_truth(digits, tmp_path, cli, db):
    _ready(cli, digits, "pixels", "hog")
    r = cli("cluster", "--space", "pixels", "-k", "10", "--truth", tmp_path / "truth.csv", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["k"] == 10 and res["n_scored"] == 400 and res["scored_against"] == "truth"
    assert set(res["metrics"]) >= {
        "ami",
        "ari",
        "homogeneity",
        "completeness",
        "v_measure",
        "purity",
        "entropy",
        "silhouette",
    }
    assert res["metrics"]["ami"] > 0.6
    assert db(
        "SELECT COUNT(*), COUNT(DISTINCT cluster) FROM cluster_assignments WHERE run_id=?",
        res["run_id"],
    ) == [(400, 10)]
    run = db("SELECT kind, space, status, params FROM runs WHERE id=?", res["run_id"])[0]
    assert run[:3] == ("cluster", "pixels", "done") and json.loads(run[3])["method"] == "kmeans"
    spectral = json.loads(
        cli(
            "cluster",
            "--space",
            "pixels",
            "-k",
            "10",
            "--method",
            "spectral",
            "--truth",
            tmp_path / "truth.csv",
            "--json",
        ).stdout
    )
    assert spectral["metrics"]["ami"] > res["metrics"]["ami"]
    table = cli("cluster", "--compare", "-k", "10")
    assert table.exit_code == 0 and "pixels" in table.output and "hog" in table.output
    assert "expert labels (30 images)" in table.output  # scored on the labeled images
    chosen = json.loads(cli("cluster", "--space", "pixels", "--k-range", "8..11", "--json").stdout)
    assert 8 <= chosen["k"] <= 11 and set(map(int, chosen["silhouette_by_k"])) == {8, 9, 10, 11}
    assert cli("cluster", "-k", "5", "--k-range", "2..4").exit_code == 2
    assert cli("cluster", "--k-range", "9..3").exit_code == 2


def test_propagate_evaluate_export_pipeline(digits, tmp_path, cli, db):
    _ready(cli, digits)
    labels_before = db("SELECT image_id, label, source FROM labels ORDER BY image_id")
    r = cli("propagate", "--space", "pixels", "--json")
    assert r.exit_code == 0, r.output
    prop = json.loads(r.stdout)
    assert prop["seeds"] == 30 and prop["propagated"] == 370 and sum(prop["counts"].values()) == 370
    assert db("SELECT COUNT(*) FROM predictions WHERE run_id=?", prop["run_id"]) == [(400,)]
    assert (
        db("SELECT image_id, label, source FROM labels ORDER BY image_id") == labels_before
    )  # untouched
    params = json.loads(db("SELECT params FROM runs WHERE id=?", prop["run_id"])[0][0])
    assert params["n_neighbors"] == 5 and params["alpha"] == 0.99

    ev = json.loads(
        cli("evaluate", "--space", "pixels", "--truth", tmp_path / "truth.csv", "--json").stdout
    )
    assert ev["mode"] == "truth" and ev["scored"] == 370 and ev["propagation_run"] == prop["run_id"]
    assert ev["accuracy"] > 0.85
    assert len(ev["per_class"]) == 10 and np.array(ev["confusion"]["matrix"]).sum() == 370
    review = ev["review"]
    assert 0 <= review["flag_share"] < 1 and review["expected_accuracy"] >= 0.97
    text = cli("evaluate", "--space", "pixels", "--truth", tmp_path / "truth.csv")
    assert "confusion matrix" in text.output
    assert f"review flag: the {100 * review['flag_share']:.0f} % least sure" in text.output

    out = tmp_path / "pseudo.csv"
    r = cli("export", "-o", out)
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out)
    assert list(df.columns) == [
        "image_id",
        "path",
        "sha256",
        "label",
        "source",
        "confidence",
        "second_label",
        "margin",
        "cluster",
        "needs_review",
        "review_reason",
        "run_id",
        "decision",
        *[f"p_{d}" for d in range(10)],  # one probability column per class
    ]
    assert len(df) == 400 and (df["source"] == "expert").sum() == 30
    p = df[[f"p_{d}" for d in range(10)]].to_numpy()
    assert np.allclose(p.sum(axis=1), 1, atol=1e-4)
    assert (df.label == p.argmax(axis=1)).all()  # ten classes: the most probable one
    assert set(df.decision) == {"expert", "most probable"}
    assert (df.loc[df.source == "expert", "needs_review"] == False).all()  # noqa: E712
    prop_rows = df[df.source == "propagated"]
    # the calibrated share is flagged, least sure (smallest margin) first
    assert prop_rows.needs_review.mean() == pytest.approx(review["flag_share"], abs=0.01)
    if prop_rows.needs_review.any():
        assert (
            prop_rows[prop_rows.needs_review].margin.max()
            <= prop_rows[~prop_rows.needs_review].margin.min()
        )
    truth = pd.read_csv(tmp_path / "truth.csv").set_index("path")["label"]
    ok = prop_rows[~prop_rows.needs_review]
    assert (ok.label.astype(int).values == truth.loc[ok.path].values).mean() >= 0.97
    assert (prop_rows.margin >= 0).all() and prop_rows.second_label.notna().all()
    only = (
        pd.read_csv(tmp_path / "u.csv")
        if cli(
            "export", "-o", tmp_path / "u.csv", "--only-unlabeled", "--min-confidence", "0.5"
        ).exit_code
        == 0
        else None
    )
    assert (
        only is not None and (only.source == "propagated").all() and (only.confidence >= 0.5).all()
    )
    r = cli("export", "-o", tmp_path / "all.csv", "--review-share", "0.9")
    assert "the 90 % least sure pseudo-labels, from --review-share" in r.output
    strict = pd.read_csv(tmp_path / "all.csv").query("source == 'propagated'")
    assert strict.needs_review.mean() == pytest.approx(0.9, abs=0.01)
    counts = cli("labels")
    assert (
        f"propagated (run {prop['run_id']}, pixels)" in counts.output and "folder" in counts.output
    )
    # a new propagation is not judged by the evaluation of the previous one
    assert cli("propagate", "--space", "pixels", "-k", "7").exit_code == 0
    r = cli("export", "-o", tmp_path / "again.csv")
    assert "the 25 % least sure pseudo-labels, from the default" in r.output


def test_holdout_evaluation_and_compare(digits, cli):
    _ready(cli, digits, "pixels", "histogram")
    assert cli("propagate", "--space", "pixels").exit_code == 0
    r = cli("evaluate", "--space", "pixels", "--folds", "3", "--json")
    assert r.exit_code == 0, r.output
    ev = json.loads(r.stdout)
    assert ev["mode"] == "holdout" and ev["folds"] == 3 and len(ev["accuracy_per_fold"]) == 3
    assert ev["scored"] == 30  # every expert label scored once (3 per digit)
    assert ev["by_chosen"] == [{"chosen": "folder", "labels": 30, "accuracy": ev["accuracy"]}]
    assert 0.5 < ev["accuracy"] <= 1.0
    cmp_ = cli("evaluate", "--compare", "--folds", "2")
    assert cmp_.exit_code == 0 and "pixels" in cmp_.output and "histogram" in cmp_.output


def test_binary_task_puts_the_missed_positive_first(tmp_path, cli, db):
    """normal vs cancer: recall of cancer, F2, the threshold for a target recall; with too few
    labeled cancers for a recall promise, the export says so and applies no threshold."""
    root = make_binary_scans(tmp_path / "scans", 12, 40)
    assert cli("ingest", root, "--space", "hog", "--labels-from-folders").exit_code == 0
    assert cli("propagate").exit_code == 0
    r = cli("evaluate", "--positive", "cancer", "--target-recall", "0.95", "--json")
    assert r.exit_code == 0, r.output
    ev = json.loads(r.stdout)
    pos = ev["positive"]
    assert pos["label"] == "cancer" and {"recall", "precision", "f2", "roc_auc", "missed"} <= set(
        pos
    )
    thr = pos["threshold_for_target_recall"]
    assert thr["recall"] >= 0.95 and 0 <= thr["threshold"] <= 1
    text = cli("evaluate", "--positive", "cancer")
    assert (
        "positive class 'cancer': recall" in text.output and "to reach recall 0.95" in text.output
    )
    # 12 labeled cancers are too few to promise recall 0.95: the export says so, applies no
    # threshold, and labels by the most probable class
    r = cli("export", "-o", tmp_path / "out.csv")
    assert r.exit_code == 0, r.output
    assert "no recall promise for 'cancer'" in r.output and "45 'cancer' labels needed" in r.output
    df = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    prop = df[df.source == "propagated"]
    assert set(prop.decision) == {"most probable"}
    assert (prop.label == np.where(prop.p_cancer > prop.p_normal, "cancer", "normal")).all()
    bad = cli("evaluate", "--positive", "tumour")
    assert bad.exit_code == 1 and "is not a label of this store" in bad.output


def test_label_import_is_all_or_nothing_with_clear_errors(image_dir, tmp_path, cli, db):
    assert cli("ingest", image_dir, "--space", "pixels", "--labels-from-folders").exit_code == 0
    before = db("SELECT image_id, label, source FROM labels ORDER BY image_id")
    [(sha,)] = db("SELECT sha256 FROM images WHERE path LIKE '%u1.png'")
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "path,label\n"
        f"{image_dir}/unlabeled/u0.png,normal\n"  # fine
        f"{image_dir}/unlabeled/ghost.png,normal\n"  # unknown image
        f"{image_dir}/unlabeled/u2.png,\n"  # empty label
        f"{image_dir}/unlabeled/u3.png,cancer\n"
        f"{image_dir}/unlabeled/u3.png,normal\n"  # the same image twice, two labels
    )
    r = cli("labels", "import", bad)
    assert r.exit_code == 1
    for needle in [
        "nothing imported",
        "line 3: ",
        "ghost.png is not in the store",
        "line 4: empty label",
        "line 6: ",
        "labeled 'normal' here but 'cancer' on line 5",
    ]:
        assert needle in r.output, needle
    assert db("SELECT image_id, label, source FROM labels ORDER BY image_id") == before

    cols = tmp_path / "cols.csv"
    cols.write_text("file,class\nx.png,normal\n")
    r = cli("labels", "import", cols)
    assert (
        r.exit_code == 1
        and "needs the columns `path` (or `sha256`) and `label`; it has: file, class" in r.output
    )

    typo = tmp_path / "typo.csv"
    typo.write_text(f"sha256,label\n{sha},cancr\n")
    r = cli("labels", "import", typo)
    assert r.exit_code == 1 and "unknown label(s) 'cancr'" in r.output and "--new-class" in r.output

    # relative paths resolve from the CSV's folder; a row equal to the current label is unchanged
    (image_dir / "good.csv").write_text(
        f"path,label\nunlabeled/u0.png,normal\n{image_dir}/labeled/cancer/c0.png,cancer\nunlabeled/u1.png,cancer\n"
    )
    r = cli("labels", "import", image_dir / "good.csv")
    assert r.exit_code == 0, r.output
    assert "2 added, 0 replaced, 1 unchanged" in r.output
    rows = dict(
        db(
            "SELECT i.path, l.source FROM labels l JOIN images i ON i.id=l.image_id WHERE "
            "l.source LIKE 'csv:%'"
        )
    )
    assert set(rows.values()) == {"csv:good.csv"} and len(rows) == 2

    by_sha = tmp_path / "sha.csv"
    [(sha2,)] = db("SELECT sha256 FROM images WHERE path LIKE '%u2.png'")
    by_sha.write_text(f"sha256,label\n{sha2.upper()},normal\n")
    assert cli("labels", "import", by_sha).exit_code == 0
    assert db(
        "SELECT l.label, l.source FROM labels l JOIN images i ON i.id=l.image_id WHERE i.sha256=?",
        sha2,
    ) == [("normal", "csv:sha.csv")]

    change = tmp_path / "change.csv"
    change.write_text(f"path,label\n{image_dir}/labeled/cancer/c0.png,normal\n")
    r = cli("labels", "import", change)
    assert (
        r.exit_code == 1
        and "already have another expert label" in r.output
        and "--replace" in r.output
    )
    assert cli("labels", "import", change, "--replace").exit_code == 0
    assert db(
        "SELECT l.label FROM labels l JOIN images i ON i.id=l.image_id WHERE i.path LIKE '%c0.png'"
    ) == [("normal",)]


def test_label_set_and_remove(image_dir, cli, db):
    assert cli("ingest", image_dir, "--space", "pixels", "--labels-from-folders").exit_code == 0
    target = image_dir / "unlabeled" / "u0.png"
    r = cli("labels", "set", target, "cancer")
    assert r.exit_code == 0, r.output
    assert db(
        "SELECT l.label, l.source FROM labels l JOIN images i ON i.id=l.image_id WHERE i.path=?",
        str(target),
    ) == [("cancer", "cli")]
    assert cli("labels", "set", target, "normal").exit_code == 1  # needs --replace
    assert cli("labels", "set", target, "normal", "--replace").exit_code == 0
    assert cli("labels", "set", target, "tumour").exit_code == 1  # unknown class
    r = cli("labels", "remove", target)
    assert r.exit_code == 0 and "label normal removed" in r.output
    assert cli("labels", "remove", target).exit_code == 1
    r = cli("labels", "set", "99999", "cancer")
    assert r.exit_code == 1 and "no image '99999'" in r.output


def test_propagation_needs_two_classes_and_a_store(image_dir, tmp_path, cli):
    assert cli("ingest", image_dir, "--space", "pixels").exit_code == 0
    r = cli("propagate")
    assert r.exit_code == 1 and "no expert labels yet" in r.output
    assert cli("labels", "set", image_dir / "unlabeled" / "u0.png", "normal").exit_code == 0
    r = cli("propagate")
    assert r.exit_code == 1 and "needs at least two" in r.output
    r = cli("export", "-o", tmp_path / "x.csv")
    assert r.exit_code == 1 and "no propagation run yet" in r.output
    assert cli("propagate", "--alpha", "1.5").exit_code == 2


def test_expert_label_without_a_vector_in_the_space_does_not_shift_the_classes(image_dir, cli, db):
    """A labeled image that failed to embed has no vector: its class cannot be a column of the
    distributions, and the pseudo-labels must keep the right names."""
    (image_dir / "labeled" / "aaa").mkdir()
    (image_dir / "labeled" / "aaa" / "bad.png").write_bytes(b"not an image")
    assert cli("ingest", image_dir, "--space", "pixels", "--labels-from-folders").exit_code == 0
    r = cli("labels", "set", image_dir / "labeled" / "aaa" / "bad.png", "aaa", "--new-class")
    assert r.exit_code == 0, r.output
    prop = json.loads(cli("propagate", "--json").stdout)
    assert prop["classes"] == ["cancer", "normal"] and prop["seeds"] == 6
    for label, dist in db(
        "SELECT label, distribution FROM predictions WHERE run_id=?", prop["run_id"]
    ):
        p = np.frombuffer(dist, np.float32)
        assert len(p) == 2 and label == ["cancer", "normal"][int(p.argmax())]


def test_truth_evaluation_of_a_run_is_recorded_under_that_runs_space(digits, tmp_path, cli, db):
    """The evaluation of another space's propagation (--run) belongs to that space: the
    export of that run takes its review threshold from it."""
    _ready(cli, digits, "pixels", "hog")
    run = json.loads(cli("propagate", "--space", "hog", "--json").stdout)["run_id"]
    r = cli("evaluate", "--truth", tmp_path / "truth.csv", "--run", run, "--json")
    assert r.exit_code == 0, r.output
    ev = json.loads(r.stdout)
    assert ev["space"] == "hog"
    assert db("SELECT space FROM runs WHERE id=?", ev["run_id"]) == [("hog",)]
    out = cli("export", "-o", tmp_path / "hog.csv", "--run", run)
    assert f"from evaluate run {ev['run_id']}" in out.output, out.output


def test_files_written_follow_the_umask(digits, tmp_path, cli):
    """A CSV handed to annotators is created like any other file: mode 0666 less the umask
    (written whole to a temporary file first, then renamed)."""
    _ready(cli, digits)
    assert cli("propagate", "--space", "pixels").exit_code == 0
    old = os.umask(0o022)
    try:
        assert cli("export", "-o", tmp_path / "out" / "pseudo.csv").exit_code == 0
        assert cli("suggest", "-n", "5", "-o", tmp_path / "to_label.csv").exit_code == 0
    finally:
        os.umask(old)
    for name in ("out/pseudo.csv", "to_label.csv"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
    assert not list(tmp_path.rglob("*.tmp"))


def test_export_applies_the_recall_promise_in_both_directions(tmp_path, cli, db):
    """25 labeled cancers promise recall 0.9 at 90 %: an image is cancer exactly when
    p(cancer) >= the promised threshold, whatever the most probable class."""
    root = make_binary_scans(tmp_path / "scans", 25, 60)
    assert cli("ingest", root, "--space", "hog", "--labels-from-folders").exit_code == 0
    assert cli("propagate").exit_code == 0
    r = cli("evaluate", "--positive", "cancer", "--target-recall", "0.9", "--json")
    assert r.exit_code == 0, r.output
    thr = json.loads(r.stdout)["recall_promise"]["threshold"]
    assert thr is not None
    r = cli("export", "-o", tmp_path / "out.csv")
    assert r.exit_code == 0 and f"'cancer' when p(cancer) >= {thr:.4f}" in r.output, r.output
    df = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    prop = df[df.source == "propagated"]
    # the CSV rounds p to 6 decimals: leave out the rows within that of the threshold
    clear = prop[(prop.p_cancer - thr).abs() > 1e-6]
    assert (clear.label == np.where(clear.p_cancer >= thr, "cancer", "normal")).all()
    assert set(clear.decision) <= {f"p(cancer) >= {thr:.6g}", f"p(cancer) < {thr:.6g}"}
