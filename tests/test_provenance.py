"""Every expert label records how its image came to be labeled (labels.chosen): by its folder,
from an imported CSV, picked by `vecstore suggest`, or by a person looking at it (review).
Undo gives back exactly what a label had, a label carried to new file content keeps it, and
stores from before it are backfilled."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from vecstore.db import Database
from vecstore.db.labels import Change
from vecstore.errors import BadInput, VecstoreError
from vecstore.results import SUGGESTION_COLUMNS
from vecstore.store import Store

from .conftest import make_image, migrate


def chosen_by_name(db) -> dict[str, str | None]:
    rows = db("SELECT p.path, l.chosen FROM labels l JOIN image_paths p ON p.image_id = l.image_id")
    return {Path(p).name: c for p, c in rows}


def ingest(cli, root: Path, *extra: str) -> None:
    r = cli("ingest", root, "--space", "pixels", *extra)
    assert r.exit_code == 0, r.output


def write_labels(path: Path, rows: dict[Path, str], **columns: list) -> Path:
    """A labels CSV (path, label), with more columns when given."""
    frame = pd.DataFrame({"path": [str(p) for p in rows], "label": list(rows.values())})
    for name, values in columns.items():
        frame[name] = values
    frame.to_csv(path, index=False)
    return path


def suggest(cli, out: Path, n: int) -> list[str]:
    """The paths `vecstore suggest -n N -o OUT` picks."""
    r = cli("suggest", "-n", n, "-o", out)
    assert r.exit_code == 0, r.output
    return list(pd.read_csv(out).path)


def unlabeled(image_dir: Path, *numbers: int) -> list[Path]:
    return [image_dir / "unlabeled" / f"u{i}.png" for i in numbers]


# ---- how each way of labeling records it ------------------------------------------------------


def test_folder_labels_are_chosen_by_folder(image_dir, cli, db):
    ingest(cli, image_dir, "--labels-from-folders")
    assert chosen_by_name(db) == {f"{c}{i}.png": "folder" for c in "nc" for i in range(3)}
    events = db("SELECT old_chosen, new_chosen, COUNT(*) FROM label_events GROUP BY 1, 2")
    assert events == [(None, "folder", 6)]


def test_a_plain_csv_import_is_chosen_import(image_dir, tmp_path, cli, db):
    ingest(cli, image_dir)
    u0, u1 = unlabeled(image_dir, 0, 1)
    labels = write_labels(tmp_path / "l.csv", {u0: "normal", u1: "cancer"})
    r = cli("labels", "import", labels, "--new-class")
    assert r.exit_code == 0, r.output
    assert "2 added" in r.output and "(chosen: 2 import)" in r.output
    assert chosen_by_name(db) == {"u0.png": "import", "u1.png": "import"}


def test_the_filled_in_suggest_output_imports_as_suggested(image_dir, tmp_path, cli, db):
    ingest(cli, image_dir)
    out = tmp_path / "to_label.csv"
    picked = suggest(cli, out, 3)
    [(params, stats)] = db("SELECT params, stats FROM runs WHERE kind = 'suggest'")
    frame = pd.read_csv(out)
    assert json.loads(params)["n"] == 3
    assert sorted(json.loads(stats)["picked"]) == sorted(frame.image_id)
    frame["label"] = ["normal", "cancer", "normal"]
    frame.to_csv(out, index=False)
    r = cli("labels", "import", out, "--new-class")
    assert r.exit_code == 0 and "(chosen: 3 suggested)" in r.output, r.output
    assert chosen_by_name(db) == {Path(p).name: "suggested" for p in picked}


def test_every_row_of_a_suggest_output_is_suggested_even_without_its_run(
    image_dir, tmp_path, cli, db
):
    """A `vecstore suggest` file made elsewhere (another store, before runs were recorded):
    its columns say where it comes from."""
    ingest(cli, image_dir)
    u0, u1 = unlabeled(image_dir, 0, 1)
    rows = {u0: "normal", u1: "cancer"}
    extra = {c: ["x", "y"] for c in SUGGESTION_COLUMNS if c not in ("path", "label")}
    r = cli("labels", "import", write_labels(tmp_path / "s.csv", rows, **extra), "--new-class")
    assert r.exit_code == 0, r.output
    assert db("SELECT COUNT(*) FROM runs WHERE kind = 'suggest'") == [(0,)]
    assert chosen_by_name(db) == {"u0.png": "suggested", "u1.png": "suggested"}


def test_a_plain_csv_naming_images_a_suggest_run_picked_imports_them_as_suggested(
    image_dir, tmp_path, cli, db
):
    ingest(cli, image_dir)
    picked = [Path(p) for p in suggest(cli, tmp_path / "picks.csv", 2)]
    others = [p for p in unlabeled(image_dir, 0, 1, 2, 3) if p not in picked][:2]
    rows = dict.fromkeys(picked + others, "normal")
    r = cli("labels", "import", write_labels(tmp_path / "mine.csv", rows), "--new-class")
    assert r.exit_code == 0 and "(chosen: 2 import, 2 suggested)" in r.output, r.output
    assert chosen_by_name(db) == {
        **{p.name: "suggested" for p in picked},
        **{p.name: "import" for p in others},
    }


def test_accepted_pseudo_labels_are_chosen_review(image_dir, tmp_path, cli, db):
    """A person accepted vecstore's own guess: never a random pick."""
    ingest(cli, image_dir)
    u0, u1 = unlabeled(image_dir, 0, 1)
    rows = {u0: "normal", u1: "cancer"}
    export = write_labels(tmp_path / "e.csv", rows, source=["expert", "propagated"])
    r = cli("labels", "import", export, "--new-class", "--accept-pseudo-labels")
    assert r.exit_code == 0 and "(chosen: 1 import, 1 review)" in r.output, r.output
    rows = db("SELECT l.source, l.chosen FROM labels l ORDER BY l.image_id")
    assert rows == [("csv:e.csv", "import"), ("accepted-pseudo:e.csv", "review")]


def test_chosen_says_it_for_the_whole_file(image_dir, tmp_path, cli, db):
    ingest(cli, image_dir)
    out = tmp_path / "picks.csv"
    picked = [Path(p) for p in suggest(cli, out, 2)]
    other = next(p for p in unlabeled(image_dir, 0, 1, 2) if p not in picked)
    rows = dict.fromkeys([*picked, other], "normal")
    mine = write_labels(tmp_path / "mine.csv", rows)
    r = cli("labels", "import", mine, "--new-class", "--chosen", "review")
    assert r.exit_code == 0 and "(chosen: 3 review)" in r.output, r.output
    assert set(chosen_by_name(db).values()) == {"review"}
    assert cli("labels", "undo").exit_code == 0
    frame = pd.read_csv(out)
    frame["label"] = "cancer"
    frame.to_csv(out, index=False)  # a suggest output, said to be a random draw
    r = cli("labels", "import", out, "--new-class", "--chosen", "import")
    assert r.exit_code == 0, r.output
    assert chosen_by_name(db) == {p.name: "import" for p in picked}


def test_folder_cannot_be_claimed_by_hand(image_dir, tmp_path, cli, db, store_path):
    ingest(cli, image_dir)
    (u0,) = unlabeled(image_dir, 0)
    mine = write_labels(tmp_path / "mine.csv", {u0: "normal"})
    r = cli("labels", "import", mine, "--new-class", "--chosen", "folder")
    assert r.exit_code == 2 and "'folder' is not one of" in r.output, r.output
    r = cli("labels", "set", u0, "normal", "--new-class", "--chosen", "random")
    assert r.exit_code == 2, r.output
    with Store.open(store_path, write=True) as store, pytest.raises(BadInput, match="folder"):
        store.set_label(str(u0), "normal", new_class=True, chosen="folder")
    with pytest.raises(ValueError, match="'random' is not one of"):
        Change(1, "normal", "cli", chosen="random")
    assert db("SELECT COUNT(*) FROM labels") == [(0,)]


def test_labels_set_is_review_unless_chosen_says_otherwise(image_dir, cli, db):
    ingest(cli, image_dir, "--labels-from-folders")
    u0, u1 = unlabeled(image_dir, 0, 1)
    assert cli("labels", "set", u0, "normal").exit_code == 0
    assert cli("labels", "set", u1, "cancer", "--chosen", "suggested").exit_code == 0
    r = cli("labels", "set", image_dir / "labeled" / "normal" / "n0.png", "cancer", "--replace")
    assert r.exit_code == 0, r.output
    chosen = chosen_by_name(db)
    assert (chosen["u0.png"], chosen["u1.png"], chosen["n0.png"]) == (
        "review",
        "suggested",
        "review",
    )
    assert chosen["n1.png"] == "folder"


# ---- undo, carry --------------------------------------------------------------------------------


def test_undo_restores_how_each_label_was_chosen(image_dir, tmp_path, cli, db):
    ingest(cli, image_dir, "--labels-from-folders")
    n0 = image_dir / "labeled" / "normal" / "n0.png"
    c0 = image_dir / "labeled" / "cancer" / "c0.png"
    mine = write_labels(tmp_path / "fix.csv", {n0: "cancer", c0: "normal"})
    assert cli("labels", "import", mine, "--replace", "--chosen", "suggested").exit_code == 0
    assert cli("labels", "set", n0, "normal", "--replace").exit_code == 0
    assert chosen_by_name(db)["n0.png"] == "review"
    history = json.loads(cli("labels", "history", n0, "--json").output.splitlines()[-1])
    assert (history["old_chosen"], history["new_chosen"]) == ("suggested", "review")
    table = cli("labels", "history", n0).output
    assert "old_chosen" in table and "new_chosen" in table and "suggested" in table
    assert cli("labels", "undo").exit_code == 0  # the set
    assert chosen_by_name(db)["n0.png"] == "suggested"
    assert cli("labels", "undo").exit_code == 0  # the import
    assert db("SELECT label, source, chosen, COUNT(*) FROM labels GROUP BY 1, 2, 3") == [
        ("cancer", "folder", "folder", 3),
        ("normal", "folder", "folder", 3),
    ]
    assert db(
        "SELECT e.old_chosen, e.new_chosen FROM label_events e JOIN label_batches b "
        "ON b.id = e.batch_id WHERE b.kind = 'undo' ORDER BY e.id"
    ) == [("review", "suggested"), ("suggested", "folder"), ("suggested", "folder")]


def test_a_label_carried_to_new_file_content_keeps_how_it_was_chosen(image_dir, tmp_path, cli, db):
    ingest(cli, image_dir)
    out = tmp_path / "picks.csv"
    a = Path(suggest(cli, out, 1)[0])
    frame = pd.read_csv(out)
    frame["label"] = "cancer"
    frame.to_csv(out, index=False)
    assert cli("labels", "import", out, "--new-class").exit_code == 0
    [(old,)] = db("SELECT image_id FROM labels")
    make_image(a, seed=77)  # rewritten with other pixels
    ingest(cli, image_dir)
    [(new, chosen, why)] = db("SELECT image_id, chosen, review_reason FROM labels")
    assert new != old and chosen == "suggested" and "content changed" in why
    carried = db(
        "SELECT e.old_chosen, e.new_chosen FROM label_events e JOIN label_batches b "
        "ON b.id = e.batch_id WHERE b.kind = 'carry'"
    )
    assert carried == [(None, "suggested")]


# ---- suggest is recorded ------------------------------------------------------------------------


def test_suggest_records_its_picks_so_it_needs_the_writer(image_dir, cli, db, store_path):
    ingest(cli, image_dir)
    with Store.open(store_path) as reader, pytest.raises(VecstoreError, match="write=True"):
        reader.suggest(2, "pixels")
    assert db("SELECT COUNT(*) FROM runs WHERE kind = 'suggest'") == [(0,)]
    with Store.open(store_path, write=True) as store:
        picks = store.suggest(2, "pixels", seed=3)
        r = cli("suggest", "-n", "2", "-o", "-")  # another writer meanwhile: refused
    assert r.exit_code == 1 and "locked" in r.output, r.output
    [(space, status, params, stats)] = db(
        "SELECT space, status, params, stats FROM runs WHERE kind = 'suggest'"
    )
    assert (space, status, json.loads(params)["seed"]) == ("pixels", "done", 3)
    assert json.loads(stats)["picked"] == [p.image_id for p in picks]


# ---- reading ------------------------------------------------------------------------------------


def test_labels_lists_the_counts_by_how_chosen(image_dir, tmp_path, cli, db, store_path):
    ingest(cli, image_dir, "--labels-from-folders")
    u0, u1, u2 = unlabeled(image_dir, 0, 1, 2)
    assert cli("labels", "import", write_labels(tmp_path / "l.csv", {u0: "normal"})).exit_code == 0
    assert cli("labels", "set", u1, "cancer", "--chosen", "suggested").exit_code == 0
    assert cli("labels", "set", u2, "cancer").exit_code == 0
    r = cli("labels")
    assert r.exit_code == 0, r.output
    header, _, *lines = r.output.splitlines()
    assert header.split() == ["label", "source", "chosen", "count", "needs_review"]
    assert any(line.split()[:4] == ["cancer", "folder", "folder", "3"] for line in lines)
    assert r.output.rstrip().endswith(
        "expert labels by how chosen: folder 6, import 1, suggested 1, review 1; 7 not picked "
        "by vecstore (folder, import) estimate accuracy without bias"
    )
    rows = [json.loads(line) for line in cli("labels", "--json").output.splitlines()]
    by_chosen: dict[str, int] = {}
    for row in rows:
        by_chosen[row["chosen"]] = by_chosen.get(row["chosen"], 0) + row["count"]
    assert by_chosen == dict(db("SELECT chosen, COUNT(*) FROM labels GROUP BY chosen"))
    database = Database(store_path / "vecstore.db")
    try:
        assert database.labels.chosen() == dict(db("SELECT image_id, chosen FROM labels"))
    finally:
        database.close()


# ---- stores from before -------------------------------------------------------------------------


def _store_at_0004(store_path: Path) -> None:
    """Images 7, 8, 9 labeled at schema 0004: 7 and 9 by folder (batch 1), 8 from a CSV
    (batch 2), then 9 changed with `labels set` (batch 3)."""
    migrate(store_path, "0004")
    at = "'2026-01-01'"
    con = sqlite3.connect(store_path / "vecstore.db")
    con.executescript(
        "INSERT INTO images (id, sha256, path, status, added_at) VALUES "
        f"(7, 'a7', '/7.png', 'ok', {at}), (8, 'a8', '/8.png', 'ok', {at}),"
        f" (9, 'a9', '/9.png', 'ok', {at});"
        "INSERT INTO label_batches (id, kind, who, source, created_at) VALUES "
        f"(1, 'folder', 'ann', 'folder', {at}), (2, 'import', 'ann', 'csv:x.csv', {at}),"
        f" (3, 'set', 'bob', 'cli', {at});"
        "INSERT INTO label_events (batch_id, image_id, old_label, old_source, new_label,"
        " new_source) VALUES (1, 7, NULL, NULL, 'cancer', 'folder'),"
        " (1, 9, NULL, NULL, 'normal', 'folder'), (2, 8, NULL, NULL, 'cancer', 'csv:x.csv'),"
        " (3, 9, 'normal', 'folder', 'cancer', 'cli');"
        "INSERT INTO labels (image_id, label, source, batch_id, created_at) VALUES "
        f"(7, 'cancer', 'folder', 1, {at}), (8, 'cancer', 'csv:x.csv', 2, {at}),"
        f" (9, 'cancer', 'cli', 3, {at});"
    )
    con.commit()
    con.close()


def test_a_store_from_0004_is_backfilled_and_its_old_batches_undo_exactly(store_path, db):
    _store_at_0004(store_path)
    with Store.open(store_path, write=True) as store:
        assert db("SELECT image_id, chosen FROM labels ORDER BY image_id") == [
            (7, "folder"),
            (8, "import"),
            (9, "review"),  # set by hand (`labels set`, source cli): a person looked at it
        ]
        assert db("SELECT image_id, old_chosen, new_chosen FROM label_events ORDER BY id") == [
            (7, None, "folder"),
            (9, None, "folder"),
            (8, None, "import"),
            (9, "folder", "review"),
        ]
        undone = store.undo_labels()
    assert undone.batch == 3 and undone.restored == 1
    assert db("SELECT image_id, label, source, chosen FROM labels ORDER BY image_id") == [
        (7, "cancer", "folder", "folder"),
        (8, "cancer", "csv:x.csv", "import"),
        (9, "normal", "folder", "folder"),
    ]


def test_only_a_suggest_output_is_taken_for_one():
    """The columns that mark a file as a `vecstore suggest` output are ones it writes, and
    none that an export writes (whose rows vecstore did not pick)."""
    from vecstore.labeling.export import EXPORT_COLUMNS
    from vecstore.labeling.label_csv import SUGGEST_ONLY

    assert set(SUGGEST_ONLY) <= set(SUGGESTION_COLUMNS)
    assert not set(SUGGEST_ONLY) & set(EXPORT_COLUMNS)
