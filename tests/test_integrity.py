"""A damaged, tampered, read-only or full store gives a clear message and exit 1 (never a
traceback); index files are trusted only when they are the very file saved for their space;
`vecstore check` reports what is wrong and `check --fix` repairs what is only a cache."""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from vecstore.db.lock import WriteLock
from vecstore.store import Store

from .conftest import make_image


def _ingest(cli, image_dir, *spaces: str) -> None:
    args = ["ingest", image_dir]
    for s in spaces or ("pixels",):
        args += ["--space", s]
    result = cli(*args)
    assert result.exit_code == 0, result.output


def _clean_exit(result, code: int = 1) -> str:
    """The command ended with ``code`` and a message, not an uncaught exception."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output
    return result.output


def _hits(cli, *args: str) -> list[tuple[int, float]]:
    r = cli("query", *args, "--json")
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    return [(row["id"], round(row["similarity"], 5)) for row in rows]


# ---- item 6: an index file is trusted only for its own space ---------------------------------
def test_index_file_copied_from_another_space_of_the_same_dimension_is_not_trusted(
    image_dir, cli, store_path
):
    _ingest(cli, image_dir, "pixels", "histogram")  # both 256-d
    pixels = _hits(cli, "--id", "1", "-k", "5", "--space", "pixels")
    assert pixels != _hits(cli, "--id", "1", "-k", "5", "--space", "histogram")
    folder = store_path / "index"
    shutil.copyfile(folder / "histogram.faiss", folder / "pixels.faiss")  # the .faiss file only
    out = _clean_exit(cli("check"))
    assert "PROBLEM: space pixels: index file" in out and "does not match" in out
    assert _hits(cli, "--id", "1", "-k", "5", "--space", "pixels") == pixels  # rebuilt
    # the file and its sidecar copied together: made for another space
    for ext in (".faiss", ".json"):
        shutil.copyfile(folder / f"histogram{ext}", folder / f"pixels{ext}")
    out = _clean_exit(cli("check"))
    assert "space pixels: index file" in out and "histogram" in out
    assert _hits(cli, "--id", "1", "-k", "5", "--space", "pixels") == pixels
    # that query saved what it rebuilt; copied once more, check --fix rebuilds it
    shutil.copyfile(folder / "histogram.faiss", folder / "pixels.faiss")
    fixed = _clean_exit(cli("check", "--fix"), 0)
    assert "rebuilt the index of space pixels" in fixed
    assert (folder / "pixels.faiss").read_bytes() != (folder / "histogram.faiss").read_bytes()
    assert "index and database agree on 10 ids" in _clean_exit(cli("check"), 0)


def test_an_index_file_changed_after_it_was_saved_is_not_trusted(image_dir, cli, store_path):
    import faiss
    import numpy as np

    _ingest(cli, image_dir)
    before = _hits(cli, "--id", "2", "-k", "4")
    path = store_path / "index" / "pixels.faiss"
    index = faiss.read_index(str(path))  # same ids, other vectors: only the bytes tell
    vectors = np.random.default_rng(0).standard_normal((index.ntotal, 256)).astype(np.float32)
    ids = faiss.vector_to_array(index.id_map)
    index.reset()
    index.add_with_ids(vectors, ids)
    faiss.write_index(index, str(path))
    out = _clean_exit(cli("check"))
    assert "space pixels: index file" in out and "does not match" in out
    assert _hits(cli, "--id", "2", "-k", "4") == before


def test_index_files_are_readable_by_the_team(image_dir, cli, store_path):
    """Other users reading the store load the saved index instead of rebuilding it."""
    old = os.umask(0o022)
    try:
        _ingest(cli, image_dir)
    finally:
        os.umask(old)
    for f in (store_path / "index").iterdir():
        assert f.stat().st_mode & 0o777 == 0o644, f


# ---- item 7: a damaged database ----------------------------------------------------------------
def _damage_page_of(store_path: Path, table: str) -> None:
    """Overwrite the header of the root page of ``table`` (a b-tree page) with garbage."""
    con = sqlite3.connect(store_path / "vecstore.db")
    size = con.execute("PRAGMA page_size").fetchone()[0]
    [(root,)] = con.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,))
    con.close()
    with open(store_path / "vecstore.db", "r+b") as f:
        f.seek((root - 1) * size)
        f.write(b"\xff" * 64)


def test_a_file_that_is_not_a_database_is_reported_by_every_command(image_dir, cli, store_path):
    _ingest(cli, image_dir)
    with open(store_path / "vecstore.db", "r+b") as f:
        f.write(b"garbage garbage!")
    out = _clean_exit(cli("check"))
    assert "PROBLEM: the database" in out and "is damaged (file is not a database)" in out
    assert "restore a backup" in out
    for args in (["info"], ["query", "--id", "1"], ["ingest", image_dir], ["reindex"]):
        out = _clean_exit(cli(*args))
        assert "is damaged" in out and "vecstore check" in out, args


def test_damage_in_the_middle_of_the_database_is_found_by_check(image_dir, cli, store_path):
    _ingest(cli, image_dir)
    _damage_page_of(store_path, "vectors")
    out = _clean_exit(cli("check"))
    assert "PROBLEM: the database" in out and "is damaged" in out and "restore a backup" in out
    out = _clean_exit(cli("query", "--id", "1"))  # it reads the damaged page
    assert "is damaged (database disk image is malformed)" in out and "vecstore check" in out
    info = cli("info")  # does not read that page: may answer, never with a traceback
    _clean_exit(info, info.exit_code if info.exit_code in (0, 1) else 1)


# ---- item 17: clear messages instead of tracebacks --------------------------------------------
@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only files")
def test_a_read_only_store_answers_reads_and_refuses_writes_clearly(image_dir, cli, store_path):
    _ingest(cli, image_dir)
    (store_path / "index" / "pixels.faiss").unlink()  # a reader must not try to save it
    before = {p: p.stat().st_mtime_ns for p in store_path.rglob("*")}
    for p in [store_path, *store_path.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)
    try:
        assert _clean_exit(cli("info"), 0)
        assert len(_hits(cli, "--id", "1", "-k", "3")) == 3
        assert "index and database agree" not in _clean_exit(cli("check"), 0)
        for args in (["ingest", image_dir], ["reindex"], ["check", "--fix"]):
            out = _clean_exit(cli(*args))
            assert "is read-only" in out, args
    finally:
        for p in [store_path, *store_path.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)
    assert {p: p.stat().st_mtime_ns for p in store_path.rglob("*")} == before


def test_a_store_path_under_a_regular_file_is_refused_clearly(image_dir, cli, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    store = afile / "sub"
    out = _clean_exit(cli("ingest", image_dir, "--space", "pixels", store=store))
    assert str(afile) in out and "is a file" in out
    out = _clean_exit(cli("info", store=store))
    assert str(afile) in out and "is a file" in out


def test_an_index_folder_replaced_by_a_file(image_dir, cli, store_path):
    _ingest(cli, image_dir)
    shutil.rmtree(store_path / "index")
    (store_path / "index").write_text("in the way")
    assert len(_hits(cli, "--id", "1", "-k", "3")) == 3  # built in memory from the database
    out = _clean_exit(cli("check"))
    assert f"PROBLEM: {store_path / 'index'} is a file" in out
    make_image(image_dir / "unlabeled" / "late.png", seed=99)
    out = _clean_exit(cli("ingest", image_dir))
    assert f"{store_path / 'index'} is a file" in out and "move it away" in out
    assert (store_path / "index").read_text() == "in the way"


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("UPDATE alembic_version SET version_num = 'garbage'", "schema revision 'garbage'"),
        ("DELETE FROM alembic_version", "alembic_version is empty"),
        ("INSERT INTO alembic_version VALUES ('0001')", "alembic_version holds 2 rows"),
    ],
)
def test_a_tampered_schema_version_is_refused_clearly(image_dir, cli, store_path, db, sql, message):
    _ingest(cli, image_dir)
    con = sqlite3.connect(store_path / "vecstore.db")
    con.execute(sql)
    con.commit()
    con.close()
    tables = db("SELECT name FROM sqlite_master ORDER BY name")
    for args in (["info"], ["query", "--id", "1"], ["ingest", image_dir], ["check"]):
        out = _clean_exit(cli(*args))
        assert message in out, (args, out)
    assert db("SELECT name FROM sqlite_master ORDER BY name") == tables  # nothing migrated
    assert db("SELECT COUNT(*) FROM vectors") == [(10,)]


def test_reindex_with_a_factory_faiss_cannot_use_keeps_the_old_setting(image_dir, cli, db):
    _ingest(cli, image_dir)
    before = _hits(cli, "--id", "1", "-k", "3")
    out = _clean_exit(cli("reindex", "--index", "IDMap,Flat"))
    assert "IDMap,Flat" in out and "--index" in out
    assert db("SELECT index_factory, index_type FROM spaces") == [(None, "Flat")]
    assert _hits(cli, "--id", "1", "-k", "3") == before
    assert _clean_exit(cli("check"), 0)


@pytest.mark.parametrize(
    "failure",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        RuntimeError("Error in faiss::FileIOWriter: file close error: No space left on device"),
    ],
)
def test_disk_full_while_writing_an_index(image_dir, cli, store_path, monkeypatch, failure):
    import faiss

    _ingest(cli, image_dir)
    folder = store_path / "index"
    saved = (folder / "pixels.faiss").read_bytes()
    real = faiss.write_index

    def full(index, path):
        real(index, path)  # a part of it reached the disk
        raise failure

    monkeypatch.setattr(faiss, "write_index", full)
    out = _clean_exit(cli("reindex"))
    assert "could not write the index" in out and "No space left on device" in out
    assert "free some disk space" in out
    monkeypatch.undo()
    assert sorted(p.name for p in folder.iterdir()) == ["pixels.faiss", "pixels.json"]
    assert (folder / "pixels.faiss").read_bytes() == saved
    assert "index and database agree on 10 ids" in _clean_exit(cli("check"), 0)


# ---- item 18: readers save what they built, stray files, interrupted runs ----------------------
def test_a_reader_that_rebuilt_a_lost_index_saves_it_when_no_writer_runs(
    image_dir, cli, store_path, monkeypatch
):
    from vecstore.search.cache import IndexCache

    _ingest(cli, image_dir)
    path = store_path / "index" / "pixels.faiss"
    before = _hits(cli, "--id", "1", "-k", "3")
    path.unlink()
    writer = WriteLock(store_path)
    writer.acquire()
    try:  # a writer is running: the reader answers and leaves the file to it
        assert _hits(cli, "--id", "1", "-k", "3") == before
        assert not path.exists()
    finally:
        writer.release()
    assert _hits(cli, "--id", "1", "-k", "3") == before
    assert path.exists() and "index and database agree on 10 ids" in cli("check").output
    builds = []
    real_build = IndexCache.build
    monkeypatch.setattr(
        IndexCache, "build", lambda self, *a, **k: builds.append(1) or real_build(self, *a, **k)
    )
    assert _hits(cli, "--id", "1", "-k", "3") == before
    assert builds == []  # the next reader loads the saved file
    assert not WriteLock(store_path).held


def test_check_reports_stray_temporary_files_and_fix_removes_them(image_dir, cli, store_path):
    _ingest(cli, image_dir)
    stray = store_path / "index" / "pixels.faissk2j4h1.tmp"  # a reindex killed mid-write
    stray.write_bytes(b"\0" * 4096)
    out = _clean_exit(cli("check"), 0)
    assert "1 stray temporary file" in out and stray.name in out and "check --fix" in out
    out = _clean_exit(cli("check", "--fix"), 0)
    assert f"removed {stray.name}" in out and not stray.exists()
    assert "stray" not in _clean_exit(cli("check"), 0)


def test_check_fix_rebuilds_an_unreadable_index(image_dir, cli, store_path):
    _ingest(cli, image_dir)
    before = _hits(cli, "--id", "3", "-k", "4")
    (store_path / "index" / "pixels.faiss").write_bytes(b"corrupt")
    assert "space pixels: index file" in _clean_exit(cli("check"))
    out = _clean_exit(cli("check", "--fix"), 0)
    assert "rebuilt the index of space pixels" in out
    assert "index and database agree on 10 ids" in out and "store is consistent" in out
    assert _hits(cli, "--id", "3", "-k", "4") == before


def test_runs_left_running_by_a_killed_process_are_marked_interrupted(
    image_dir, cli, store_path, db
):
    _ingest(cli, image_dir)
    con = sqlite3.connect(store_path / "vecstore.db")
    con.execute(
        "INSERT INTO runs (kind, space, params, stats, code_version, started_at, status) "
        "VALUES ('propagate', 'pixels', '{}', '{}', 'x', '2026-01-01 00:00:00', 'running')"
    )
    con.commit()
    con.close()
    assert _clean_exit(cli("info"), 0)  # a reader cannot know whether it still runs
    assert db("SELECT status FROM runs WHERE kind = 'propagate'") == [("running",)]
    Store.open(store_path, write=True).close()  # the one writer: nothing else can run
    [(status, stats)] = db("SELECT status, stats FROM runs WHERE kind = 'propagate'")
    assert status == "interrupted" and "interrupted" in json.loads(stats)
    assert db("SELECT status FROM runs WHERE kind = 'ingest'") == [("done",)]
    out = _clean_exit(cli("check"), 0)
    assert "1 run(s) were interrupted" in out


# ---- item 18: a moved file no command cleared ---------------------------------------------------
def test_forget_clears_a_moved_file_and_keeps_labels_unless_asked(image_dir, cli, store_path, db):
    _ingest(cli, image_dir)
    gone = image_dir / "unlabeled" / "u2.png"
    labeled = next((image_dir / "labeled").rglob("*.png"))
    assert cli("labels", "set", "--new-class", gone, "cancer").exit_code == 0
    labels_before = db("SELECT image_id, label FROM labels ORDER BY image_id")
    shutil.move(gone, store_path.parent / "elsewhere.png")
    assert "1 files missing on disk" in _clean_exit(cli("check"))
    out = _clean_exit(cli("forget", "--missing", image_dir))  # labeled: refused, nothing done
    assert "carry an expert label" in out and "u2.png (cancer)" in out and "--drop-labels" in out
    assert db("SELECT image_id, label FROM labels ORDER BY image_id") == labels_before
    assert db("SELECT COUNT(*) FROM image_paths") == [(10,)]
    out = _clean_exit(cli("forget", "--missing", "--drop-labels", image_dir), 0)
    assert "forgot 1 paths and 1 images, with 1 expert labels (label batch" in out
    assert db("SELECT COUNT(*) FROM images") == [(9,)]
    assert db("SELECT COUNT(*) FROM image_paths WHERE path = ?", str(gone)) == [(0,)]
    assert db("SELECT COUNT(*) FROM labels") == [(len(labels_before) - 1,)]
    assert "index and database agree on 9 ids" in _clean_exit(cli("check"), 0)
    hist = cli("labels", "history", gone)
    assert hist.exit_code == 0 and "forget" in hist.output and "cancer" in hist.output
    assert "cannot be undone" in _clean_exit(cli("labels", "undo"))
    assert cli("labels", "set", labeled, "cancer").exit_code == 0
    out = _clean_exit(cli("forget", labeled))  # on disk and labeled: refused
    assert "carry an expert label" in out
    assert "no file the store knows" in _clean_exit(cli("forget", store_path / "nothing.png"))


# ---- item 17: more user errors that gave a traceback ----------------------------------------
def test_propagate_when_every_image_is_labeled_says_so(tmp_path, cli):
    for i in range(3):
        make_image(tmp_path / "all" / "a" / f"a{i}.png", seed=i)
        make_image(tmp_path / "all" / "b" / f"b{i}.png", seed=10 + i)
    r = cli("ingest", tmp_path / "all", "--space", "pixels", "--labels-from-folders")
    assert r.exit_code == 0, r.output
    out = _clean_exit(cli("propagate"), 0)
    assert "every image has an expert label: nothing to spread" in out


def _bad_paths_file(tmp_path: Path) -> Path:
    p = tmp_path / "paths.txt"
    p.write_bytes(b"/data/a.png\n/data/b\xff.png\n/data/c.png\n")
    return p


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda t: ["--paths", _bad_paths_file(t)], "line 2 is not valid UTF-8"),
        (lambda t: ["--paths", t], "is a folder"),
    ],
    ids=["non-utf8-paths", "paths-is-a-folder"],
)
def test_import_vectors_with_a_bad_paths_file(tmp_path, cli, make, message):
    import numpy as np

    np.save(tmp_path / "v.npy", np.ones((3, 4), np.float32))
    out = _clean_exit(cli("import-vectors", tmp_path / "v.npy", "--space", "x", *make(tmp_path)))
    assert message in out


@pytest.mark.parametrize(
    ("vectors", "message"),
    [
        (["x", "y", "z"], "string values"),
        ([1.0, 2.0, 3.0], "column 'vector' holds double values"),
        ([[1.0, 2.0], None, [3.0, 4.0]], "row 2 has no vector"),
        ([None, [1.0, 2.0], [3.0, 4.0]], "row 1 has no vector"),
        ([["a", "b"], ["c", "d"], ["e", "f"]], "column 'vector' holds lists of"),
    ],
    ids=["strings", "scalars", "null-inside", "null-first", "lists-of-strings"],
)
def test_import_vectors_with_odd_parquet_vector_columns(tmp_path, cli, db, vectors, message):
    import pandas as pd

    f = tmp_path / "v.parquet"
    pd.DataFrame({"path": ["a.png", "b.png", "c.png"], "vector": vectors}).to_parquet(f)
    out = _clean_exit(cli("import-vectors", f, "--space", "x"))
    assert message in out and "list of floats" in out
