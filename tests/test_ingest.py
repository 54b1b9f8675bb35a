"""`vecstore ingest` / `vecstore embed`: rows, duplicates, incremental runs, labels, metadata."""

from __future__ import annotations

import json
import shutil
import sqlite3

import numpy as np
import pytest

from vecstore.store import Store

from .conftest import make_image


def test_ingest_writes_images_paths_vectors_and_folder_labels(image_dir, cli, db):
    result = cli(
        "ingest", image_dir, "--space", "hog", "--space", "pixels", "--labels-from-folders"
    )
    assert result.exit_code == 0, result.output
    assert "added 10" in result.output and "failed 0" in result.output
    assert "images/s" in result.output
    assert db("SELECT COUNT(*), COUNT(DISTINCT sha256) FROM images WHERE status='ok'") == [(10, 10)]
    assert db("SELECT COUNT(*) FROM image_paths") == [(10,)]
    spaces = dict(db("SELECT name, dim FROM spaces"))
    assert spaces == {"hog": 324, "pixels": 256}
    counts = dict(
        db(
            "SELECT s.name, COUNT(*) FROM vectors v JOIN spaces s ON s.id=v.space_id GROUP BY "
            "s.name"
        )
    )
    assert counts == {"hog": 10, "pixels": 10}
    lengths = {
        r[0]
        for r in db(
            "SELECT length(vector) FROM vectors v JOIN spaces s ON s.id=v.space_id WHERE "
            "s.name='hog'"
        )
    }
    assert lengths == {324 * 4}
    labels = db("SELECT label, source, COUNT(*) FROM labels GROUP BY label, source ORDER BY label")
    assert labels == [("cancer", "folder", 3), ("normal", "folder", 3)]
    # the stored vector is the embedder's vector of that file
    with Store.open(image_dir.parent / "store") as store:
        img = store.image_by_path(str(image_dir / "unlabeled" / "u0.png"))
        _, vec = store.vectors(store.get_space("pixels"), [img.id])
    from vecstore.embedders import get_embedder, open_image

    expected = get_embedder("pixels").embed_image(
        open_image(str(image_dir / "unlabeled" / "u0.png"))
    )
    np.testing.assert_array_equal(vec[0], expected)
    runs = db("SELECT kind, status, stats FROM runs")
    assert runs[0][:2] == ("ingest", "done")
    assert json.loads(runs[0][2])["embedded"][0]["embedded"] == 10


def test_second_run_embeds_nothing_and_new_files_only_are_added(image_dir, cli, db):
    assert cli("ingest", image_dir, "--space", "hog").exit_code == 0
    result = cli("ingest", image_dir, "--json")
    assert result.exit_code == 0, result.output
    rep = json.loads(result.stdout)
    assert rep["added"] == 0 and rep["unchanged"] == 10
    assert rep["embedded"] == [{**rep["embedded"][0], "embedded": 0}]
    make_image(image_dir / "unlabeled" / "new.png", seed=999)
    rep = json.loads(cli("ingest", image_dir, "--json").stdout)
    assert rep["added"] == 1 and rep["unchanged"] == 10 and rep["embedded"][0]["embedded"] == 1
    assert db("SELECT COUNT(*) FROM vectors") == [(11,)]


def test_identical_bytes_under_two_paths_are_one_image_with_both_paths(image_dir, cli, db):
    copy = image_dir / "unlabeled" / "copy of u0.png"
    shutil.copy(image_dir / "unlabeled" / "u0.png", copy)
    result = cli("ingest", image_dir, "--space", "pixels")
    assert result.exit_code == 0, result.output
    assert "duplicates 1" in result.output
    [line] = [ln for ln in result.output.splitlines() if "duplicate:" in ln]
    assert str(copy) in line and str(image_dir / "unlabeled" / "u0.png") in line
    assert db("SELECT COUNT(*) FROM images") == [(10,)]
    assert db("SELECT COUNT(*) FROM image_paths") == [(11,)]
    assert db("SELECT COUNT(*) FROM vectors") == [(10,)]
    assert db(
        "SELECT COUNT(DISTINCT image_id) FROM image_paths WHERE path IN (?, ?)",
        str(copy),
        str(image_dir / "unlabeled" / "u0.png"),
    ) == [(1,)]


def test_changed_file_replaces_the_old_content(image_dir, cli, db):
    assert cli("ingest", image_dir, "--space", "pixels").exit_code == 0
    target = image_dir / "unlabeled" / "u1.png"
    [(old_sha,)] = db(
        "SELECT i.sha256 FROM images i JOIN image_paths p ON p.image_id=i.id WHERE p.path=?",
        str(target),
    )
    make_image(target, seed=4242)
    rep = json.loads(cli("ingest", image_dir, "--json").stdout)
    assert rep["changed"] == 1 and rep["added"] == 1
    assert db("SELECT COUNT(*) FROM images WHERE sha256=?", old_sha) == [(0,)]
    assert db("SELECT COUNT(*) FROM images") == [(10,)] and db("SELECT COUNT(*) FROM vectors") == [
        (10,)
    ]
    assert cli("check").exit_code == 0


def test_embed_adds_a_space_to_images_already_in_the_store(image_dir, cli, db):
    assert cli("ingest", image_dir, "--space", "pixels").exit_code == 0
    result = cli("embed", "--space", "histogram")
    assert result.exit_code == 0, result.output
    assert "space histogram: embedded 10" in result.output
    assert db(
        "SELECT COUNT(*) FROM vectors v JOIN spaces s ON s.id=v.space_id WHERE s.name='histogram'"
    ) == [(10,)]
    assert "embedded 0" in cli("embed", "--space", "histogram").output


def test_cnn_space_records_random_weights_and_says_so(image_dir, cli, db):
    result = cli(
        "ingest",
        image_dir,
        "--space",
        "resnet18-layer3",
        "--weights",
        "random",
        "--batch-size",
        "4",
    )
    assert result.exit_code == 0, result.output
    assert "RANDOM (untrained) weights" in result.output
    assert db("SELECT name, dim, weights, weights_random FROM spaces") == [
        ("resnet18-layer3", 256, "random:seed=0", 1)
    ]
    assert db("SELECT COUNT(*) FROM vectors") == [(10,)]
    # the space keeps its weights: other weights are refused instead of mixing two models
    result = cli("ingest", image_dir, "--space", "resnet18-layer3", "--weights", "imagenet")
    assert result.exit_code == 1 and "would mix two models" in result.output
    info = cli("info")
    assert "random:seed=0 (RANDOM)" in info.output


def test_labels_from_folders_with_custom_unlabeled_names_and_conflicts(tmp_path, cli, db):
    root = tmp_path / "data"
    make_image(root / "normal" / "a.png", seed=1)
    make_image(root / "todo" / "b.png", seed=2)
    make_image(root / "cancer" / "same.png", seed=3)
    shutil.copy(root / "cancer" / "same.png", root / "normal" / "same.png")  # one image, two labels
    result = cli(
        "ingest", root, "--space", "pixels", "--labels-from-folders", "--unlabeled-name", "todo"
    )
    assert result.exit_code == 0, result.output
    assert "label conflict" in result.output
    assert db("SELECT label, COUNT(*) FROM labels GROUP BY label ORDER BY label") == [
        ("cancer", 1),
        ("normal", 1),
    ]


def test_metadata_csv_is_joined_by_file_name_or_path(image_dir, tmp_path, cli, db):
    meta = tmp_path / "meta.csv"
    meta.write_text("filename,patient,age\nu0.png,P1,54\nc1.png,P2,61\nghost.png,P3,70\n")
    result = cli("ingest", image_dir, "--space", "pixels", "--metadata", meta)
    assert result.exit_code == 0, result.output
    assert "2 images matched, 1 CSV rows matched no image" in result.output
    rows = {
        json.loads(m)["patient"]: json.loads(m)
        for (m,) in db("SELECT metadata_json FROM images WHERE metadata_json IS NOT NULL")
    }
    assert rows == {"P1": {"patient": "P1", "age": "54"}, "P2": {"patient": "P2", "age": "61"}}
    by_path = tmp_path / "by_path.csv"
    by_path.write_text(
        f"path,site\nunlabeled/u1.png,Lyon\n{image_dir / 'unlabeled' / 'u2.png'},Nice\n"
    )
    assert cli("ingest", image_dir, "--metadata", by_path).exit_code == 0
    sites = sorted(
        json.loads(m)["site"]
        for (m,) in db("SELECT metadata_json FROM images WHERE metadata_json LIKE '%site%'")
    )
    assert sites == ["Lyon", "Nice"]


def test_a_file_name_shared_by_two_files_is_no_join_key(tmp_path, cli, db):
    """PACS exports repeat file names (P1/IM-0001.png, P2/IM-0001.png): a metadata row
    joined by file name would go to both patients' images. The ingest refuses before it
    writes anything and asks for a path column."""
    root = tmp_path / "scans"
    make_image(root / "P1" / "IM-0001.png", seed=1)
    make_image(root / "P2" / "IM-0001.png", seed=2)
    make_image(root / "P2" / "IM-0002.png", seed=3)
    meta = tmp_path / "meta.csv"
    meta.write_text("filename,patient\nIM-0001.png,P1\nIM-0002.png,P2\n")
    result = cli("ingest", root, "--space", "pixels", "--metadata", meta)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "IM-0001.png" in result.output and "P1/IM-0001.png" in result.output
    assert "P2/IM-0001.png" in result.output and "path column" in result.output
    assert db("SELECT COUNT(*) FROM images") == [(0,)]
    by_path = tmp_path / "by_path.csv"
    by_path.write_text("path,patient\nP1/IM-0001.png,P1\nP2/IM-0001.png,P2\n")
    assert cli("ingest", root, "--space", "pixels", "--metadata", by_path).exit_code == 0
    patients = dict(db("SELECT path, json_extract(metadata_json, '$.patient') FROM images"))
    assert patients == {
        str(root / "P1" / "IM-0001.png"): "P1",
        str(root / "P2" / "IM-0001.png"): "P2",
        str(root / "P2" / "IM-0002.png"): None,
    }


@pytest.mark.parametrize(
    "content,message",
    [
        ("patient,age\nP1,3\n", "needs a column naming the image"),
        ("filename,age\nu0.png,3\nu0.png,4\n", "repeats u0.png"),
        ("filename\nu0.png\n", "no column besides"),
    ],
)
def test_bad_metadata_csv_is_refused_before_anything_is_ingested(
    image_dir, tmp_path, cli, store_path, content, message
):
    meta = tmp_path / "bad.csv"
    meta.write_text(content)
    result = cli("ingest", image_dir, "--space", "pixels", "--metadata", meta)
    assert result.exit_code == 1
    assert message in result.output
    with Store.open(store_path) as store:
        assert store.info().images == 0


def test_store_from_environment_variable(image_dir, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from vecstore.cli import main

    monkeypatch.setenv("VECSTORE_STORE", str(tmp_path / "envstore"))
    result = CliRunner().invoke(main, ["ingest", str(image_dir), "--space", "pixels"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "envstore" / "vecstore.db").exists()


def test_ingest_of_a_missing_folder_is_a_usage_error(tmp_path, cli):
    result = cli("ingest", tmp_path / "nope")
    assert result.exit_code == 2
    assert "is not a folder" in result.output


def test_a_failing_index_update_marks_the_ingest_and_embed_runs_failed(
    image_dir, store_path, cli, db
):
    """Keeping the FAISS index in step is part of the run: when it fails, the run says so
    (plan trusts the rates of runs that are done)."""
    assert cli("ingest", image_dir, "--space", "hog").exit_code == 0
    con = sqlite3.connect(store_path / "vecstore.db")
    con.execute("UPDATE spaces SET index_factory = 'IVF64,Flat'")  # too few vectors to train
    con.commit()
    con.close()
    make_image(image_dir / "unlabeled" / "new.png", seed=999)
    r = cli("ingest", image_dir)
    assert r.exit_code == 1 and "needs at least" in r.output, r.output
    assert db("SELECT status FROM runs WHERE kind='ingest' ORDER BY id DESC LIMIT 1") == [
        ("failed",)
    ]
    r = cli("embed", "--space", "hog")
    assert r.exit_code == 1 and "needs at least" in r.output, r.output
    assert db("SELECT status FROM runs WHERE kind='embed' ORDER BY id DESC LIMIT 1") == [
        ("failed",)
    ]
