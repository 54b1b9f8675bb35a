"""`vecstore suggest`, `vecstore evaluate --curve`, `vecstore plan` (the arithmetic)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vecstore.db import Database


def test_suggest_cold_start_then_uncertain_and_the_loop_closes(digits, tmp_path, cli, db):
    # a near-duplicate pair: the same picture, one pixel different
    src = next((digits / "unlabeled").glob("*.png"))
    arr = np.asarray(Image.open(src)).copy()
    arr[0, 0] = 255 - arr[0, 0]
    Image.fromarray(arr).save(digits / "unlabeled" / "near_dup.png")
    assert cli("ingest", digits, "--space", "pixels").exit_code == 0  # no labels yet
    out = tmp_path / "to_label.csv"
    r = cli("suggest", "-n", "12", "-o", out)
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out, keep_default_na=False)
    assert list(df.columns[:3]) == ["path", "label", "reason"] and len(df) == 12
    assert df.reason.str.contains("has no label yet").all()  # cold start: typical and diverse
    assert df.cluster.nunique() == 12 and df.path.nunique() == 12
    assert not ({str(src), str(digits / "unlabeled" / "near_dup.png")} <= set(df.path))

    # the radiologist fills the label column and imports the file as it is
    truth = pd.read_csv(tmp_path / "truth.csv").set_index("path")["label"]
    df["label"] = [str(truth.get(p, 0)) for p in df.path]
    df.to_csv(out, index=False)
    r = cli("labels", "import", out)
    assert r.exit_code == 0 and "12 added" in r.output, r.output
    labeled = {p for (p,) in db("SELECT i.path FROM labels l JOIN images i ON i.id=l.image_id")}

    r = cli("suggest", "-n", "10", "-o", tmp_path / "next.csv")
    nxt = pd.read_csv(tmp_path / "next.csv", keep_default_na=False)
    assert not set(nxt.path) & labeled  # never an image already labeled
    assert df["label"].nunique() >= 2  # typical picks of 12 clusters span several digits
    assert nxt.reason.str.contains("least certain pseudo-label").any()
    assert nxt.pseudo_label.ne("").all() and nxt.margin.ne("").all()


def test_learning_curve_run(digits, tmp_path, cli, db):
    assert cli("ingest", digits, "--space", "pixels").exit_code == 0
    r = cli(
        "evaluate",
        "--curve",
        "--truth",
        tmp_path / "truth.csv",
        "--sizes",
        "10,20,40,80,160",
        "--repeats",
        "2",
        "--json",
    )
    assert r.exit_code == 0, r.output
    c = json.loads(r.stdout)
    assert [p["labels"] for p in c["points"]] == [10, 20, 40, 80, 160]
    accs = [p["accuracy"] for p in c["points"]]
    assert accs[-1] > accs[0] and all(0 < a <= 1 for a in accs)
    assert set(c["fit"]) == {"a", "b", "c", "rmse"}
    assert db("SELECT kind, status FROM runs WHERE id=?", c["run_id"]) == [
        ("learning_curve", "done")
    ]
    bad = cli("evaluate", "--curve", "--sizes", "ten")
    assert bad.exit_code == 2 and "comma-separated" in bad.output
    none = cli("evaluate", "--curve")  # no expert labels in this store
    assert none.exit_code == 1 and "needs known labels" in none.output


@pytest.fixture
def planned_store(image_dir, store_path, cli):
    """A CNN space with known numbers: CPU at 100 images/s on 5,000 images, and a learning
    curve of 0.80 / 0.90 / 0.95 at 10 / 100 / 1,000 labels, fitted 1 - 0.5 m^-0.3."""
    r = cli(
        "ingest",
        image_dir,
        "--space",
        "resnet18-layer3",
        "--weights",
        "random",
        "--labels-from-folders",
    )
    assert r.exit_code == 0, r.output
    db = Database(store_path / "vecstore.db")
    with db.runs.record("embed", "resnet18-layer3", {}) as run:
        run.stats = {
            "embedded": 5000,
            "images_per_s": 100.0,
            "device": "cpu",
            "failed": 0,
            "seconds": 50,
        }
    with db.runs.record("learning_curve", "resnet18-layer3", {}) as run:
        run.stats = {
            "points": [
                {"labels": 10, "accuracy": 0.80},
                {"labels": 100, "accuracy": 0.90},
                {"labels": 1000, "accuracy": 0.95},
            ],
            "fit": {"a": 1.0, "b": 0.5, "c": 0.3, "rmse": 0.0},
            "classes": ["cancer", "normal"],
            "known": 2000,
            "store_images": 2000,
            "positive": None,
        }
    db.close()
    return store_path


def _plan(cli, *args):
    r = cli("plan", "--space", "resnet18-layer3", "--json", *map(str, args))
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_plan_arithmetic(planned_store, cli):
    p = _plan(
        cli,
        "--images",
        4_000_000,
        "--budget-eur",
        5000,
        "--eur-per-label",
        1.5,
        "--gpu-eur-per-hour",
        2.5,
        "--gpu-images-per-s",
        1000,
        "--cpu-eur-per-hour",
        1.0,
    )
    cpu, gpu = p["compute"]["cpu"], p["compute"]["gpu"]
    assert cpu["hours"] == pytest.approx(4e6 / 100 / 3600) and cpu["eur"] == pytest.approx(
        4e6 / 100 / 3600 * 1.0
    )
    assert gpu["hours"] == pytest.approx(4e6 / 1000 / 3600) and gpu["eur"] == pytest.approx(
        4e6 / 1000 / 3600 * 2.5
    )
    assert p["compute_choice"] == "gpu" and not gpu["measured"] and cpu["measured"]
    assert p["labels_affordable"] == int((5000 - 4e6 / 1000 / 3600 * 2.5) // 1.5) == 3331
    q = p["quality"]
    assert q["expected_accuracy"] == 0.95  # beyond the measured range: the last measured value
    assert q["fitted_accuracy"] == pytest.approx(1 - 0.5 * 3331**-0.3)
    assert p["storage"]["vectors_bytes"] == 4_000_000 * 256 * 4
    assert (
        p["storage"]["index"] == "IVF4096,SQ8"
    )  # 2 sqrt(4M) = 4000 -> 2^12 lists, 1 GB of 8-bit codes
    assert p["feasible"] and p["problems"] == []
    assert any("vecstore suggest" in c for c in p["conditions"])
    assert any("given by --gpu-images-per-s, not measured" in a for a in p["assumptions"])

    # free CPU time: the CPU is chosen while it finishes within --max-hours
    p = _plan(
        cli,
        "--images",
        4_000_000,
        "--budget-eur",
        150,
        "--eur-per-label",
        1.5,
        "--gpu-images-per-s",
        1000,
    )
    assert p["compute_choice"] == "cpu" and p["compute_eur"] == 0 and p["labels_affordable"] == 100
    assert p["quality"]["expected_accuracy"] == pytest.approx(0.90)  # a measured point
    p = _plan(
        cli,
        "--images",
        4_000_000,
        "--budget-eur",
        150,
        "--eur-per-label",
        1.5,
        "--gpu-images-per-s",
        1000,
        "--max-hours",
        5,
    )
    assert p["compute_choice"] == "gpu"
    # between measured points: interpolated in log(m)
    p = _plan(
        cli,
        "--images",
        1000,
        "--budget-eur",
        47.43,
        "--eur-per-label",
        1.5,
        "--gpu-images-per-s",
        1000,
    )
    assert p["labels_affordable"] == 31
    assert p["quality"]["expected_accuracy"] == pytest.approx(
        np.interp(np.log(31), np.log([10, 100, 1000]), [0.8, 0.9, 0.95])
    )


def test_plan_verdicts(planned_store, cli):
    p = _plan(
        cli,
        "--images",
        4_000_000,
        "--budget-eur",
        5000,
        "--eur-per-label",
        1.5,
        "--gpu-images-per-s",
        1000,
        "--target-accuracy",
        0.97,
    )
    assert not p["feasible"] and any("under the target 0.97" in x for x in p["problems"])
    p = _plan(
        cli,
        "--images",
        4_000_000,
        "--budget-eur",
        1,
        "--eur-per-label",
        1.5,
        "--gpu-images-per-s",
        1000,
    )
    assert not p["feasible"] and any("cannot cover the 2 classes" in x for x in p["problems"])
    text = cli(
        "plan",
        "--space",
        "resnet18-layer3",
        "--images",
        4_000_000,
        "--budget-eur",
        5000,
        "--eur-per-label",
        1.5,
        "--gpu-images-per-s",
        1000,
    )
    assert "verdict: FEASIBLE" in text.output and "assumptions:" in text.output
    no_gpu = cli(
        "plan",
        "--space",
        "resnet18-layer3",
        "--images",
        10,
        "--budget-eur",
        5,
        "--eur-per-label",
        1,
    )
    assert "no GPU throughput" in no_gpu.output
    assert cli("plan", "--images", 10, "--budget-eur", 5, "--eur-per-label", 0).exit_code == 2


def test_plan_counts_the_labels_a_recall_promise_needs(planned_store, cli):
    """The rule evaluate uses: 45 positives for recall 0.95 at 90 %; cancer is half of the
    expert labels here, so about 90 random labels."""
    args = ["--images", 4_000_000, "--budget-eur", 5000, "--gpu-images-per-s", 1000]
    p = _plan(cli, *args, "--eur-per-label", 1.5, "--positive", "cancer")
    assert p["promise_labels_needed"] == 90
    assert not any("recall promise" in x for x in p["problems"])
    assert any("'cancer' is 50.0% of the expert labels" in a for a in p["assumptions"])
    p = _plan(cli, *args, "--eur-per-label", 1.5, "--positive", "cancer", "--confidence", "0.99")
    assert p["promise_labels_needed"] == 2 * 90  # 1 - 0.95**n >= 0.99: n = 90 positives
    budget = p["compute_eur"] + 50 * 1.5  # what is left buys 50 labels
    poor = _plan(cli, *args, "--eur-per-label", 1.5, "--budget-eur", budget, "--positive", "cancer")
    assert poor["labels_affordable"] == 50 and not poor["feasible"]
    assert any("needs 45 labeled 'cancer', about 90 random" in x for x in poor["problems"])
    assert _plan(cli, *args, "--eur-per-label", 1.5)["promise_labels_needed"] is None
