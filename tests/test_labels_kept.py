"""Nothing an expert labeled is lost: a file briefly unavailable, re-saved or rewritten keeps its
label; embeddings that failed are tried again; pseudo-labels do not come back as expert labels;
every label change is a batch that can be undone; image ids are never given twice."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3

import faiss
import numpy as np
import pandas as pd
import pytest
from PIL import Image, PngImagePlugin

from .conftest import make_image


def labeled_folder(tmp_path, cli, *spaces):
    """data/ with 6 images ingested, a.png labeled `cancer` and b.png `normal` by CSV."""
    data = tmp_path / "data"
    for i, name in enumerate(["a", "b", "c", "d", "e", "f"]):
        make_image(data / f"{name}.png", seed=i)
    args = ["ingest", data]
    for s in spaces or ("hog",):
        args += ["--space", s]
    assert cli(*args).exit_code == 0
    csv = tmp_path / "l.csv"
    csv.write_text(f"path,label\n{data / 'a.png'},cancer\n{data / 'b.png'},normal\n")
    r = cli("labels", "import", csv, "--new-class")
    assert r.exit_code == 0, r.output
    return data


def labels_by_path(db) -> dict[str, tuple[str, str | None]]:
    rows = db(
        "SELECT p.path, l.label, l.review_reason FROM labels l "
        "JOIN image_paths p ON p.image_id = l.image_id"
    )
    return {os.path.basename(p): (lab, why) for p, lab, why in rows}


def image_of(db, path) -> int:
    [(iid,)] = db("SELECT image_id FROM image_paths WHERE path = ?", str(path))
    return iid


# ---- 1. a file briefly unavailable keeps its image, vectors and label ------------------------


def _empty(path, keep):
    shutil.move(path, keep)
    path.write_bytes(b"")


def _dangling_link(path, keep):
    shutil.move(path, keep)
    os.symlink(path.parent / "share" / "a.png", path)  # a share inside DIR, not mounted


def _truncated(path, keep):
    shutil.copy(path, keep)
    path.write_bytes(keep.read_bytes()[:40])


@pytest.mark.parametrize("break_it", [_empty, _dangling_link, _truncated], ids=lambda f: f.__name__)
def test_a_file_briefly_unavailable_keeps_its_image_vectors_and_label(tmp_path, cli, db, break_it):
    data = labeled_folder(tmp_path, cli)
    a = data / "a.png"
    iid = image_of(db, a)
    keep = tmp_path / "keep.png"
    break_it(a, keep)
    r = cli("ingest", data)
    assert r.exit_code == 0, r.output
    assert "a.png" in r.output and "kept" in r.output, r.output
    assert image_of(db, a) == iid
    assert db("SELECT COUNT(*) FROM vectors WHERE image_id = ?", iid) == [(1,)]
    assert labels_by_path(db)["a.png"] == ("cancer", None)
    [(problem,)] = db("SELECT problem FROM image_paths WHERE path = ?", str(a))
    assert problem
    a.unlink()
    shutil.move(keep, a)  # the copy finished, the share is back
    r = cli("ingest", data)
    assert r.exit_code == 0, r.output
    assert labels_by_path(db)["a.png"] == ("cancer", None)
    assert image_of(db, a) == iid
    assert db("SELECT problem FROM image_paths WHERE path = ?", str(a)) == [(None,)]
    listed = json.loads(cli("labels", "--json").stdout.splitlines()[0])
    assert listed["label"] == "cancer" and listed["count"] == 1


def test_the_issue_s_reproduction_keeps_the_label(tmp_path, cli, db):
    data = labeled_folder(tmp_path, cli)
    a, keep = data / "a.png", tmp_path / "keep.png"
    shutil.move(a, keep)
    a.write_bytes(b"")
    assert cli("ingest", data).exit_code == 0
    a.unlink()
    shutil.move(keep, a)
    assert cli("ingest", data).exit_code == 0
    assert "cancer" in cli("labels").output
    assert labels_by_path(db) == {"a.png": ("cancer", None), "b.png": ("normal", None)}


# ---- 2. re-saved with the same pixels, or rewritten with other pixels -------------------------


def test_a_file_re_saved_with_the_same_pixels_keeps_its_label_silently(tmp_path, cli, db):
    data = labeled_folder(tmp_path, cli)
    a = data / "a.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "re-saved by a viewer")
    Image.open(a).copy().save(a, pnginfo=info)
    r = cli("ingest", data)
    assert r.exit_code == 0, r.output
    assert labels_by_path(db)["a.png"] == ("cancer", None)
    out = tmp_path / "e.csv"
    assert cli("propagate", "--space", "hog").exit_code == 0
    assert cli("export", "-o", out).exit_code == 0
    row = pd.read_csv(out).set_index("path").loc[str(a)]
    assert row["label"] == "cancer" and row["source"] == "expert" and not row["needs_review"]


def test_a_file_rewritten_with_other_pixels_keeps_its_label_flagged_for_review(tmp_path, cli, db):
    data = labeled_folder(tmp_path, cli)
    a = data / "a.png"
    old = image_of(db, a)
    make_image(a, seed=77)
    r = cli("ingest", data)
    assert r.exit_code == 0, r.output
    label, why = labels_by_path(db)["a.png"]
    assert label == "cancer" and "content changed since labeled" in why
    assert image_of(db, a) != old
    assert cli("propagate", "--space", "hog").exit_code == 0
    out = tmp_path / "e.csv"
    assert cli("export", "-o", out).exit_code == 0
    row = pd.read_csv(out).set_index("path").loc[str(a)]
    assert row["source"] == "expert" and row["needs_review"]
    assert "content changed since labeled" in row["review_reason"]
    history = cli("labels", "history", a)
    assert history.exit_code == 0 and "content changed" in history.output, history.output


# ---- 3. an embedding that failed is tried again ------------------------------------------------


def test_a_file_missing_during_embed_is_embedded_once_it_is_back(tmp_path, cli, db):
    data = labeled_folder(tmp_path, cli)
    a, keep = data / "a.png", tmp_path / "keep.png"
    shutil.move(a, keep)
    r = cli("embed", "--space", "pixels")
    assert r.exit_code == 0 and "failed 1" in r.output, r.output
    iid = image_of(db, a)
    assert db("SELECT status FROM images WHERE id = ?", iid) == [("ok",)]
    shutil.move(keep, a)
    r = cli("embed", "--space", "pixels")
    assert r.exit_code == 0 and "embedded 1" in r.output, r.output
    assert db(
        "SELECT COUNT(*) FROM vectors v JOIN spaces s ON s.id = v.space_id "
        "WHERE s.name = 'pixels' AND v.image_id = ?",
        iid,
    ) == [(1,)]
    assert db("SELECT COUNT(*) FROM embed_failures") == [(0,)]


def test_an_image_one_space_failed_stays_usable_everywhere_else(tmp_path, cli, db):
    data = labeled_folder(tmp_path, cli)
    a, keep = data / "a.png", tmp_path / "keep.png"
    shutil.move(a, keep)
    assert cli("embed", "--space", "pixels").exit_code == 0
    shutil.move(keep, a)
    assert cli("propagate", "--space", "hog").exit_code == 0
    out = tmp_path / "e.csv"
    assert cli("export", "-o", out).exit_code == 0
    assert str(a) in set(pd.read_csv(out)["path"])
    hits = cli("query", "--id", image_of(db, a), "--space", "hog", "--json")
    assert hits.exit_code == 0 and len(hits.stdout.splitlines()) == 5
    csv = tmp_path / "again.csv"
    csv.write_text(f"path,label\n{a},cancer\n")
    assert cli("labels", "import", csv).exit_code == 0


# ---- 4. pseudo-labels do not come back as expert labels ---------------------------------------


def test_re_importing_an_export_refuses_its_pseudo_labels(tmp_path, cli, db):
    labeled_folder(tmp_path, cli)
    assert cli("propagate", "--space", "hog").exit_code == 0
    out = tmp_path / "pseudo.csv"
    assert cli("export", "-o", out).exit_code == 0
    before = db("SELECT image_id, label, source FROM labels ORDER BY image_id")
    r = cli("labels", "import", out)
    assert r.exit_code == 1 and "pseudo-label" in r.output and "--accept-pseudo-labels" in r.output
    assert db("SELECT image_id, label, source FROM labels ORDER BY image_id") == before
    r = cli("labels", "import", out, "--accept-pseudo-labels")
    assert r.exit_code == 0 and "4 added" in r.output, r.output
    sources = {s for (s,) in db("SELECT source FROM labels")}
    assert sources == {"csv:l.csv", "accepted-pseudo:pseudo.csv"}
    r = cli("labels", "undo")
    assert r.exit_code == 0, r.output
    assert db("SELECT image_id, label, source FROM labels ORDER BY image_id") == before


# ---- every label change is a batch: undo, history ---------------------------------------------


def test_undo_restores_the_exact_previous_label_set(tmp_path, cli, db):
    data = labeled_folder(tmp_path, cli)
    before = db("SELECT image_id, label, source FROM labels ORDER BY image_id")
    csv = tmp_path / "fix.csv"
    csv.write_text(f"path,label\n{data / 'a.png'},normal\n{data / 'c.png'},cancer\n")
    assert cli("labels", "import", csv, "--replace").exit_code == 0
    assert cli("labels", "remove", data / "b.png").exit_code == 0
    assert cli("labels", "set", data / "d.png", "normal").exit_code == 0
    for _ in range(3):
        r = cli("labels", "undo")
        assert r.exit_code == 0, r.output
    assert db("SELECT image_id, label, source FROM labels ORDER BY image_id") == before
    r = cli("labels", "undo")  # the first import is a batch too
    assert r.exit_code == 0 and db("SELECT COUNT(*) FROM labels") == [(0,)]


def test_undo_of_an_older_batch_is_refused_when_a_later_one_changed_its_images(tmp_path, cli, db):
    data = labeled_folder(tmp_path, cli)
    [(first,)] = db("SELECT min(id) FROM label_batches")
    assert cli("labels", "set", data / "a.png", "normal", "--replace").exit_code == 0
    r = cli("labels", "undo", "--batch", first)
    assert r.exit_code == 1 and "a.png" in r.output and "undo" in r.output, r.output
    assert labels_by_path(db)["a.png"] == ("normal", None)


def test_history_shows_who_changed_a_label_when_and_from_what(tmp_path, cli, db, monkeypatch):
    monkeypatch.setenv("VECSTORE_USER", "dr.house")
    data = labeled_folder(tmp_path, cli)
    assert cli("labels", "set", data / "a.png", "normal", "--replace").exit_code == 0
    r = cli("labels", "history", data / "a.png", "--json")
    assert r.exit_code == 0, r.output
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(e["old_label"], e["new_label"]) for e in events] == [
        (None, "cancer"),
        ("cancer", "normal"),
    ]
    assert {e["who"] for e in events} == {"dr.house"}
    assert events[1]["kind"] == "set" and events[0]["kind"] == "import"
    listing = cli("labels", "history")
    assert listing.exit_code == 0 and "import" in listing.output and "set" in listing.output


# ---- 5. image ids are never given twice --------------------------------------------------------


def test_image_ids_are_never_reused_and_every_index_holds_the_stored_vectors(
    tmp_path, cli, db, store_path
):
    """The issue's case: the largest id's file becomes a copy of another image (its image is
    deleted) while only `hog` is ingested, so the `pixels` index file still holds its vector;
    a new file must not get that id, or `pixels` answers with the old vector."""
    data = labeled_folder(tmp_path, cli, "hog", "pixels")
    ids_before = {i for (i,) in db("SELECT id FROM images")}
    shutil.copy(data / "e.png", data / "f.png")
    assert cli("ingest", data, "--space", "hog").exit_code == 0
    assert len(ids_before) - 1 == db("SELECT COUNT(*) FROM images")[0][0]
    make_image(data / "g.png", seed=99)
    assert cli("ingest", data).exit_code == 0
    assert image_of(db, data / "g.png") not in ids_before
    con = sqlite3.connect(store_path / "vecstore.db")
    for (name,) in con.execute("SELECT name FROM spaces"):
        index = faiss.read_index(str(store_path / "index" / f"{name}.faiss"))
        stored = dict(
            con.execute(
                "SELECT v.image_id, v.vector FROM vectors v JOIN spaces s ON s.id = v.space_id "
                "WHERE s.name = ?",
                (name,),
            )
        )
        assert sorted(faiss.vector_to_array(index.id_map)) == sorted(stored)
        for iid, blob in stored.items():
            v = np.frombuffer(blob, np.float32)
            np.testing.assert_allclose(
                index.reconstruct(int(iid)), v / np.linalg.norm(v), atol=1e-5
            )
    con.close()
