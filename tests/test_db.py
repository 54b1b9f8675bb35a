"""The database layer on its own: each repository of vecstore.db against a migrated database,
its answers checked against the rows read back with plain sqlite3."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy.exc

from vecstore import __version__
from vecstore.db import Database
from vecstore.db import lock as lock_module
from vecstore.db.images import ChunkWrite
from vecstore.db.labels import CHANGED, BatchInfo, Carry, Change
from vecstore.db.lock import WriteLock
from vecstore.embedders.base import SpaceInfo
from vecstore.errors import NoRun, StoreLocked, UnknownSpace, VecstoreError
from vecstore.store import Store

DIM = 4
SHA = {i: f"{i:064x}" for i in range(1, 10)}  # a distinct fake sha256 per image id


# ---- fixtures and helpers -------------------------------------------------------------------
@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory) -> Path:
    """One database migrated to head by the Store; each test gets a copy of it."""
    store = tmp_path_factory.mktemp("template") / "store"
    Store.open(store, create=True).close()
    return store / "vecstore.db"


@pytest.fixture
def database(migrated_db, tmp_path):
    path = tmp_path / "store" / "vecstore.db"
    path.parent.mkdir()
    shutil.copy(migrated_db, path)
    db = Database(path)
    yield db
    db.close()


@pytest.fixture
def space(database):
    return database.spaces.create_imported("imp", DIM, "vectors.npy")


def query(database: Database, sql: str, *params) -> list[tuple]:
    """Rows read with plain sqlite3, beside the layer under test."""
    con = sqlite3.connect(database.path)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def execute(database: Database, sql: str, *params) -> None:
    """A write with plain sqlite3 (foreign keys off: it can break what the layer keeps)."""
    con = sqlite3.connect(database.path)
    try:
        con.execute(sql, params)
        con.commit()
    finally:
        con.close()


def vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def import_paths(database: Database, space, paths: list[str], x: np.ndarray | None = None):
    """import_rows of one chunk from the next free id; returns its counts."""
    x = vectors(len(paths)) if x is None else x
    counts, _ = database.vectors.import_rows(space.id, paths, x, database.images.next_id())
    return counts


def add_images(database: Database, *images: tuple[int, str, str | None, str]) -> None:
    """Images (id, path, sha256, status), each with its path row, as an ingest chunk writes them."""
    w = ChunkWrite(
        new_images=[{"id": i, "path": p, "sha256": h, "status": st} for i, p, h, st in images],
        new_paths=[{"image_id": i, "path": p} for i, p, _, _ in images],
    )
    with database.session() as s:
        database.images.write_chunk(s, w)
        s.commit()


def add_vector(database: Database, space_id: int, image_id: int) -> None:
    with database.session() as s:
        database.vectors.add(s, space_id, [image_id], vectors(1, seed=image_id))
        s.commit()


def info(name: str, dim: int = DIM) -> SpaceInfo:
    return SpaceInfo(name=name, model="hog", layer=None, dim=dim, preprocessing="gray 64x64")


def ensure(database: Database, si: SpaceInfo) -> int:
    with database.session() as s:
        space_id = database.spaces.ensure(s, si).id
        s.commit()
    return space_id


# ---- Database -------------------------------------------------------------------------------
def test_fresh_database_is_at_head_and_intact(database):
    assert database.at_head()
    assert database.integrity() == ("ok", [])


def test_integrity_reports_a_broken_foreign_key(database, space):
    sql = "INSERT INTO vectors (space_id, image_id, vector) VALUES (?, 99, x'00')"
    execute(database, sql, space.id)
    answer, broken = database.integrity()
    assert answer == "ok"
    assert [(table, parent) for table, _, parent, _ in broken] == [("vectors", "images")]


# ---- runs -----------------------------------------------------------------------------------
def test_record_marks_a_finished_block_done_with_its_stats(database):
    with database.runs.record("cluster", "imp", {"k": 3}) as run:
        run.stats = {"sizes": [2, 1]}
    got = database.runs.get(run.id, "cluster")
    assert (got.status, got.stats) == ("done", {"sizes": [2, 1]})
    assert (got.kind, got.space, got.params) == ("cluster", "imp", {"k": 3})
    assert got.code_version == __version__
    assert got.finished_at is not None and got.finished_at >= got.started_at
    assert got.seconds is not None and got.seconds >= 0
    row = query(database, "SELECT status, stats, finished_at FROM runs WHERE id = ?", run.id)
    assert row[0][0] == "done" and json.loads(row[0][1]) == {"sizes": [2, 1]} and row[0][2]


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()], ids=repr)
def test_record_marks_a_raising_block_failed_with_partial_stats_and_reraises(database, exc):
    with pytest.raises(type(exc)) as raised:
        with database.runs.record("embed", "imp", {}, partial=lambda: {"embedded": 7}) as run:
            run.stats = {"never": "kept"}
            raise exc
    assert raised.value is exc
    got = database.runs.get(run.id, "embed")
    assert got.status == "failed"
    assert got.stats == {"embedded": 7, "error": repr(exc)}
    assert got.finished_at is not None and got.seconds >= 0


def test_record_without_partial_keeps_only_the_error(database):
    with pytest.raises(ValueError):
        with database.runs.record("ingest", None, {}) as run:
            raise ValueError("bad")
    assert database.runs.get(run.id, "ingest").stats == {"error": "ValueError('bad')"}


def test_record_marks_the_run_failed_even_when_partial_raises(database):
    def broken_partial() -> dict:
        raise KeyError("counter")

    with pytest.raises(RuntimeError, match="real failure"):
        with database.runs.record("embed", "imp", {}, partial=broken_partial):
            raise RuntimeError("real failure")
    (run,) = database.runs.all()
    assert run.status == "failed" and "real failure" in run.stats["error"]


def finished_run(database: Database, kind: str, space: str, status: str = "done") -> int:
    run_id = database.runs.start(kind, space, {})
    database.runs.finish(run_id, {}, status=status)
    return run_id


def test_latest_is_the_newest_done_run_of_the_kind_and_space(database):
    first_a = finished_run(database, "cluster", "a")
    newest_a = finished_run(database, "cluster", "a")
    newest_b = finished_run(database, "cluster", "b")
    finished_run(database, "cluster", "a", status="failed")
    database.runs.start("cluster", "a", {})  # still running
    finished_run(database, "embed", "a")
    assert database.runs.latest("cluster", "a").id == newest_a != first_a
    assert database.runs.latest("cluster", "b").id == newest_b
    assert database.runs.latest("cluster").id == newest_b
    assert database.runs.latest("cluster", "c") is None
    assert database.runs.latest("propagate") is None


def test_get_refuses_a_run_of_another_kind_or_an_unknown_id(database):
    with database.runs.record("cluster", "imp", {}) as run:
        pass
    with pytest.raises(NoRun, match=f"run {run.id} is not a propagate run"):
        database.runs.get(run.id, "propagate")
    with pytest.raises(NoRun, match="run 999 is not a cluster run"):
        database.runs.get(999, "cluster")


def test_all_runs_in_id_order(database):
    ids = [database.runs.start(kind, None, {}) for kind in ("ingest", "embed", "cluster")]
    assert [(r.id, r.kind, r.status) for r in database.runs.all()] == [
        (ids[0], "ingest", "running"),
        (ids[1], "embed", "running"),
        (ids[2], "cluster", "running"),
    ]


# ---- spaces ---------------------------------------------------------------------------------
def test_get_with_no_space_says_how_to_add_one(database):
    with pytest.raises(UnknownSpace, match="no embedding space yet") as raised:
        database.spaces.get(None)
    assert "vecstore ingest DIR --space NAME" in str(raised.value)
    assert "vecstore embed --space NAME" in str(raised.value)


def test_ensure_creates_a_space_once(database):
    first = ensure(database, info("hog"))
    assert ensure(database, info("hog")) == first
    assert ensure(database, info("pixels", dim=16)) != first
    rows = query(database, "SELECT id, name, model, dim, preprocessing FROM spaces ORDER BY id")
    assert rows == [
        (first, "hog", "hog", DIM, "gray 64x64"),
        (first + 1, "pixels", "hog", 16, "gray 64x64"),
    ]


def test_get_none_is_the_first_space_and_get_name_finds_it(database):
    hog = ensure(database, info("hog"))
    pixels = ensure(database, info("pixels"))
    assert database.spaces.get(None).id == hog
    assert database.spaces.get("pixels").id == pixels
    assert database.spaces.by_name("pixels").id == pixels
    assert database.spaces.by_name("nope") is None


def test_get_unknown_name_lists_the_known_spaces(database):
    ensure(database, info("hog"))
    ensure(database, info("pixels"))
    with pytest.raises(UnknownSpace, match=r"it has: hog, pixels") as raised:
        database.spaces.get("clip")
    assert "'clip' is not in this store" in str(raised.value)
    assert "vecstore embed --space clip" in str(raised.value)


def test_create_imported_records_where_the_vectors_came_from(database, space):
    row = query(database, "SELECT name, model, layer, dim, preprocessing FROM spaces")
    assert row == [("imp", "imported", None, DIM, "precomputed, imported from vectors.npy")]
    assert space.id == database.spaces.get("imp").id


def test_index_settings_auto_is_null_a_factory_is_kept_and_none_leaves_it(database, space):
    def settings():
        return query(database, "SELECT index_factory, memory_budget FROM spaces")[0]

    database.spaces.set_index_settings(space.id, factory="IVF64,Flat", memory_budget=2**33)
    assert settings() == ("IVF64,Flat", 2**33)
    back = database.spaces.set_index_settings(space.id, factory=None, memory_budget=None)
    assert settings() == ("IVF64,Flat", 2**33)
    assert (back.index_factory, back.memory_budget) == ("IVF64,Flat", 2**33)
    database.spaces.set_index_settings(space.id, factory="auto", memory_budget=None)
    assert settings() == (None, 2**33)


def test_record_index_stores_the_built_factory_and_its_stats(database, space):
    assert database.spaces.get("imp").index_type is None  # read (and cached) before
    database.spaces.record_index(space.id, "HNSW32", {"recall@10": 0.98, "efSearch": 64})
    kind, stats = query(database, "SELECT index_type, index_stats FROM spaces")[0]
    assert (kind, json.loads(stats)) == ("HNSW32", {"recall@10": 0.98, "efSearch": 64})
    assert database.spaces.get("imp").index_type == "HNSW32"


def test_all_is_cached_until_another_connection_commits(database, space):
    before = database.spaces.all()
    assert database.spaces.all()[0] is before[0]  # nothing changed: the cached rows
    other = Database(database.path)
    try:
        other.spaces.create_imported("clip", 512, "clip.npy")
    finally:
        other.close()
    assert [s.name for s in database.spaces.all()] == ["imp", "clip"]
    execute(database, "UPDATE spaces SET index_type = 'Flat' WHERE name = 'imp'")
    assert database.spaces.get("imp").index_type == "Flat"


def test_hot_path_reads_use_one_connection_per_thread_all_closed_with_the_store(tmp_path):
    database = Database(tmp_path / "vecstore.db")
    database.migrate()
    seen: dict[str, object] = {}
    both_alive = threading.Barrier(2)  # an ended thread's ident (and idle reader) may be reused

    def read(name: str, barrier: threading.Barrier | None = None) -> None:
        assert database.read("SELECT count(*) FROM sqlite_master WHERE name = 't'") == [(0,)]
        seen[name] = database._reader()
        if barrier is not None:
            barrier.wait(timeout=30)

    threads = [threading.Thread(target=read, args=(n, both_alive)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    read("main")
    assert len({id(c) for c in seen.values()}) == 3  # no thread waits on another's reads
    execute(database, "CREATE TABLE t (x)")
    assert database.read("SELECT count(*) FROM sqlite_master WHERE name = 't'") == [(1,)]
    database.close()
    for conn in seen.values():
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            conn.execute("SELECT 1")


def test_vector_counts_per_space(database, space):
    other = database.spaces.create_imported("other", DIM, "o.npy")
    import_paths(database, space, ["/a.png", "/b.png", "/c.png"])
    import_paths(database, other, ["/a.png"])
    assert database.spaces.vector_counts() == {space.id: 3, other.id: 1}


# ---- vectors --------------------------------------------------------------------------------
def test_import_rows_adds_images_paths_and_vectors(database, space):
    x = vectors(3)
    counts, next_id = database.vectors.import_rows(space.id, ["/a.png", "/b.png", "/c.png"], x, 5)
    assert (counts.added, counts.reused, counts.skipped, next_id) == (3, 0, 0, 8)
    assert query(database, "SELECT id, path, sha256, status FROM images ORDER BY id") == [
        (5, "/a.png", None, "ok"),
        (6, "/b.png", None, "ok"),
        (7, "/c.png", None, "ok"),
    ]
    assert query(database, "SELECT image_id, path FROM image_paths ORDER BY id") == [
        (5, "/a.png"),
        (6, "/b.png"),
        (7, "/c.png"),
    ]
    rows = query(database, "SELECT image_id, vector FROM vectors ORDER BY image_id")
    assert rows == [(5 + k, x[k].tobytes()) for k in range(3)]


def test_import_rows_skips_vectors_it_has_and_reuses_known_paths(database, space):
    other = database.spaces.create_imported("other", DIM, "o.npy")
    import_paths(database, space, ["/a.png", "/b.png"])
    import_paths(database, other, ["/b.png"])
    x = vectors(3, seed=1)
    counts = import_paths(database, other, ["/a.png", "/b.png", "/c.png"], x)
    assert (counts.added, counts.reused, counts.skipped) == (1, 1, 1)
    assert database.images.counts() == {"ok": 3, "failed": 0, "paths": 3}
    ids, got = database.vectors.get(other)
    assert ids.tolist() == [1, 2, 3]
    assert got[0].tobytes() == x[0].tobytes()  # /a.png: reused, given this vector
    assert got[1].tobytes() != x[1].tobytes()  # /b.png: skipped, keeps its first vector
    again = import_paths(database, other, ["/a.png", "/b.png", "/c.png"], x)
    assert (again.added, again.reused, again.skipped) == (0, 0, 3)


def test_import_rows_is_one_transaction(database, space):
    with pytest.raises(sqlite3.IntegrityError):
        import_paths(database, space, ["/a.png", "/b.png", "/a.png"])  # a path twice
    assert query(database, "SELECT count(*) FROM images") == [(0,)]
    assert query(database, "SELECT count(*) FROM vectors") == [(0,)]
    assert import_paths(database, space, ["/a.png"]).added == 1  # the connection still works


def test_get_returns_sorted_ids_and_bit_exact_vectors(database, space):
    x = vectors(4)
    x[0, :] = [np.nan, -0.0, np.inf, np.float32(1e-45)]  # NaN, negative zero, subnormal
    database.vectors.import_rows(space.id, ["/c.png", "/d.png"], x[2:], 10)
    database.vectors.import_rows(space.id, ["/a.png", "/b.png"], x[:2], 1)
    other = database.spaces.create_imported("other", DIM, "o.npy")
    import_paths(database, other, ["/e.png"])
    ids, got = database.vectors.get(space)
    assert ids.tolist() == [1, 2, 10, 11] and ids.dtype == np.int64
    assert got.dtype == np.float32 and got.shape == (4, DIM)
    assert got.tobytes() == x.tobytes()


def test_get_a_subset_of_ids(database, space):
    x = vectors(5)
    import_paths(database, space, [f"/{i}.png" for i in range(5)], x)
    other = database.spaces.create_imported("other", DIM, "o.npy")
    import_paths(database, other, ["/1.png"], vectors(1, seed=9))  # image 2, another space
    ids, got = database.vectors.get(space, np.array([5, 2, 4, 99]))
    assert ids.tolist() == [2, 4, 5]
    assert got.tobytes() == x[[1, 3, 4]].tobytes()
    none_ids, none = database.vectors.get(space, [])
    assert none_ids.tolist() == [] and none.shape == (0, DIM)


def test_vectors_mark_moves_past_new_rows_and_counts_deletions_of_its_space_only(database, space):
    """The mark: the table's largest rowid (new rows of any space move it) and the vectors
    deleted from this space, counted by the trigger whether deleted by hand or along with
    their image (ON DELETE CASCADE); ``added_since`` gives the space's rows past a rowid."""
    other = database.spaces.create_imported("other", DIM, "o.npy")
    x = vectors(3)
    import_paths(database, space, ["/a.png", "/b.png"], x[:2])
    start = database.vectors.mark(space)
    assert start.deleted == 0
    import_paths(database, other, ["/o.png"])
    moved = database.vectors.mark(space)
    assert moved.last_rowid > start.last_rowid and moved.deleted == 0
    assert database.vectors.added_since(space, start.last_rowid)[0].tolist() == []
    import_paths(database, space, ["/c.png"], x[2:])
    ids, got = database.vectors.added_since(space, start.last_rowid)
    assert ids.tolist() == [4] and got.tobytes() == x[2].tobytes()
    database.images.forget(["/a.png", "/o.png"])  # one vector of each space, by cascade
    assert database.vectors.mark(space).deleted == 1
    assert database.vectors.mark(other).deleted == 1
    execute(database, "DELETE FROM vectors WHERE image_id = 2")
    assert database.vectors.mark(space).deleted == 2


def test_get_of_an_empty_space(database, space):
    ids, got = database.vectors.get(space)
    assert ids.shape == (0,) and got.shape == (0, DIM)


def test_ids_one_and_count(database, space):
    x = vectors(3)
    import_paths(database, space, ["/a.png", "/b.png", "/c.png"], x)
    other = database.spaces.create_imported("other", DIM, "o.npy")
    import_paths(database, other, ["/d.png"])
    assert database.vectors.ids(space).tolist() == [1, 2, 3]
    one = database.vectors.one(space, 2)
    assert one.shape == (1, DIM) and one.tobytes() == x[1].tobytes()
    assert database.vectors.one(space, 4) is None  # /d.png has a vector, in the other space
    assert database.vectors.one(space, 99) is None
    assert (database.vectors.count(space), database.vectors.count(other)) == (3, 1)


def test_total_bytes_sums_every_space(database, space):
    assert database.vectors.total_bytes() == 0
    import_paths(database, space, ["/a.png", "/b.png"])
    other = database.spaces.create_imported("other", 8, "o.npy")
    database.vectors.import_rows(other.id, ["/a.png"], np.zeros((1, 8), np.float32), 3)
    assert database.vectors.total_bytes() == 2 * DIM * 4 + 8 * 4


def _corrupt(database: Database, image_id: int, floats: int) -> None:
    blob = np.arange(floats, dtype=np.float32).tobytes()
    execute(database, "UPDATE vectors SET vector = ? WHERE image_id = ?", blob, image_id)


def test_wrong_length_counts_bad_blobs_of_one_space(database, space):
    import_paths(database, space, ["/a.png", "/b.png", "/c.png"])
    assert database.vectors.wrong_length(space) == 0
    _corrupt(database, 2, DIM + 1)
    other = database.spaces.create_imported("other", DIM, "o.npy")
    assert (database.vectors.wrong_length(space), database.vectors.wrong_length(other)) == (1, 0)


def test_get_refuses_a_space_with_a_wrong_length_blob(database, space):
    import_paths(database, space, ["/a.png", "/b.png", "/c.png"])
    _corrupt(database, 2, DIM - 1)
    with pytest.raises(VecstoreError, match="'imp' holds vectors of the wrong length"):
        database.vectors.get(space)


def test_get_refuses_wrong_length_blobs_that_cancel_out(database, space):
    import_paths(database, space, ["/a.png", "/b.png", "/c.png"])
    _corrupt(database, 1, DIM + 1)
    _corrupt(database, 2, DIM - 1)
    assert database.vectors.wrong_length(space) == 2
    with pytest.raises(VecstoreError, match="wrong length"):
        database.vectors.get(space)


@pytest.mark.parametrize("read", ["subset", "one"])
def test_reading_some_vectors_refuses_a_wrong_length_blob(database, space, read):
    import_paths(database, space, ["/a.png", "/b.png"])
    _corrupt(database, 2, DIM + 1)
    with pytest.raises(VecstoreError, match="wrong length"):
        if read == "subset":
            database.vectors.get(space, [2])
        else:
            database.vectors.one(space, 2)


# ---- images ---------------------------------------------------------------------------------
def test_by_path_makes_the_path_absolute(database, space, tmp_path, monkeypatch):
    import_paths(database, space, [str(tmp_path / "a.png"), str(tmp_path / "b.png")])
    monkeypatch.chdir(tmp_path)
    assert database.images.by_path("b.png").id == 2
    assert database.images.by_path(str(tmp_path / "a.png")).id == 1
    assert database.images.by_path("missing.png") is None


def test_by_sha_exists_and_get(database):
    add_images(database, (1, "/a.png", SHA[1], "ok"), (2, "/b.png", SHA[2], "ok"))
    assert database.images.by_sha(SHA[2]).path == "/b.png"
    assert database.images.by_sha(SHA[3]) is None
    assert database.images.exists(1) and not database.images.exists(3)
    assert database.images.get(1).sha256 == SHA[1]
    assert database.images.get(3) is None


def test_paths_and_counts(database):
    add_images(
        database,
        (1, "/a.png", SHA[1], "ok"),
        (2, "/b.png", SHA[2], "ok"),
        (5, "/bad.png", None, "failed"),
    )
    with database.session() as s:  # the same bytes found under a second path
        database.images.write_chunk(s, ChunkWrite(new_paths=[{"image_id": 1, "path": "/a2.png"}]))
        s.commit()
    assert database.images.paths() == {1: "/a.png", 2: "/b.png", 5: "/bad.png"}
    assert database.images.counts() == {"ok": 2, "failed": 1, "paths": 4}
    assert database.images.next_id() == 6  # after the highest id, not the count


def test_counts_of_an_empty_database(database):
    assert database.images.counts() == {"ok": 0, "failed": 0, "paths": 0}
    assert database.images.next_id() == 1


def test_to_embed_lists_usable_hashed_images_without_a_vector_in_the_space(database, space):
    other = database.spaces.create_imported("other", DIM, "o.npy")
    add_images(
        database,
        (1, "/has-vector.png", SHA[1], "ok"),
        (2, "/todo.png", SHA[2], "ok"),
        (3, "/failed.png", SHA[3], "failed"),
        (4, "/vector-elsewhere.png", SHA[4], "ok"),
    )
    add_vector(database, space.id, 1)
    add_vector(database, other.id, 4)
    import_paths(database, space, ["/imported.png"])  # no sha256: never read here
    database.vectors.import_rows(other.id, ["/imported-elsewhere.png"], vectors(1), 6)
    assert database.images.to_embed(space.id) == [(2, "/todo.png"), (4, "/vector-elsewhere.png")]
    assert database.images.to_embed(other.id) == [(1, "/has-vector.png"), (2, "/todo.png")]


def test_embed_failures_are_per_space_and_cleared_by_a_vector(database, space):
    add_images(database, (1, "/a.png", SHA[1], "ok"), (2, "/b.png", SHA[2], "ok"))
    with database.session() as s:
        database.vectors.record_failures(s, space.id, [(2, "cannot read file: gone")])
        s.commit()
    assert query(database, "SELECT id, status FROM images ORDER BY id") == [(1, "ok"), (2, "ok")]
    assert database.images.failures() == [
        ("/b.png", "imp: cannot read file: gone (tried again next time)")
    ]
    assert database.images.to_embed(space.id) == [(1, "/a.png"), (2, "/b.png")]
    with database.session() as s:
        database.vectors.add(s, space.id, [2], vectors(1))
        s.commit()
    assert database.images.failures() == []
    assert query(database, "SELECT COUNT(*) FROM embed_failures") == [(0,)]


def test_merge_metadata_adds_columns_to_what_an_image_has(database):
    add_images(database, (1, "/a.png", SHA[1], "ok"), (2, "/b.png", SHA[2], "ok"))
    assert database.images.merge_metadata({1: {"patient": "p1", "age": 60}}) == 1
    assert database.images.merge_metadata({1: {"age": 61, "site": "lung"}, 2: {"x": 1}}) == 2
    rows = query(database, "SELECT id, metadata_json FROM images ORDER BY id")
    assert [(i, json.loads(m)) for i, m in rows] == [
        (1, {"patient": "p1", "age": 61, "site": "lung"}),
        (2, {"x": 1}),
    ]


def test_a_path_s_new_content_takes_its_label_and_the_old_image_goes(database, space):
    add_images(database, (1, "/a.png", SHA[1], "ok"), (2, "/b.png", SHA[2], "ok"))
    add_vector(database, space.id, 1)
    _set(database, {1: "cancer"}, "cli")
    (path_id,) = query(database, "SELECT id FROM image_paths WHERE path = '/a.png'")[0]
    moved = ChunkWrite(
        new_images=[{"id": 3, "path": "/a.png", "sha256": SHA[3], "status": "ok"}],
        path_updates=[{"b_id": path_id, "b_image_id": 3, "b_size": 10, "b_mtime": 5}],
        carry=[Carry(1, 3, "/a.png", same_pixels=False)],
        left=[1],
    )
    with database.session() as s:
        database.images.write_chunk(s, moved)
        assert database.labels.carry(s, moved.carry, "tester", "ingest run 1") == 1
        database.images.drop_pathless(s, moved.left)
        s.commit()
    assert not database.images.exists(1)
    assert database.images.by_path("/a.png").id == 3
    assert query(database, "SELECT count(*) FROM vectors") == [(0,)]
    assert query(database, "SELECT image_id, label, source, review_reason FROM labels") == [
        (3, "cancer", "cli", CHANGED)
    ]
    assert database.integrity() == ("ok", [])


# ---- labels ---------------------------------------------------------------------------------
@pytest.fixture
def four_images(database, space) -> list[int]:
    import_paths(database, space, [f"/{i}.png" for i in range(4)])
    return [1, 2, 3, 4]


def _set(database, changes: dict, source: str, kind: str = "set"):
    return database.labels.apply(
        [Change(i, lab, source) for i, lab in changes.items()], BatchInfo(kind, "tester", source)
    )


def test_apply_adds_then_replaces_a_label_as_batches(database, four_images):
    first = _set(database, {1: "normal"}, "folder")
    assert (database.labels.get(1).label, database.labels.get(1).source) == ("normal", "folder")
    second = _set(database, {1: "cancer"}, "cli")
    assert query(database, "SELECT image_id, label, source, batch_id FROM labels") == [
        (1, "cancer", "cli", second)
    ]
    assert database.labels.get(2) is None
    assert query(
        database, "SELECT batch_id, image_id, old_label, new_label FROM label_events ORDER BY id"
    ) == [(first, 1, None, "normal"), (second, 1, "normal", "cancer")]
    assert query(database, "SELECT id, kind, who FROM label_batches") == [
        (first, "set", "tester"),
        (second, "set", "tester"),
    ]


def test_apply_that_changes_nothing_records_no_batch(database, four_images):
    _set(database, {1: "normal"}, "folder")
    assert _set(database, {1: "normal"}, "folder") is None
    assert _set(database, {3: None}, "cli") is None  # no label to remove
    assert query(database, "SELECT COUNT(*) FROM label_batches") == [(1,)]


def test_apply_removes_a_label_and_records_what_it_was(database, four_images):
    _set(database, {1: "normal", 2: "cancer"}, "folder")
    removed = database.labels.apply([Change(1, None)], BatchInfo("remove", "tester", "cli"))
    assert database.labels.all() == {2: "cancer"}
    assert query(
        database,
        "SELECT old_label, old_source, new_label, new_source FROM label_events WHERE batch_id=?",
        removed,
    ) == [("normal", "folder", None, None)]


def test_apply_sets_many_labels_replacing_existing_ones_in_one_batch(database, four_images):
    _set(database, {1: "normal", 2: "normal"}, "folder")
    batch = _set(database, {2: "cancer", 3: "cancer", 4: "normal"}, "csv:labels.csv", "import")
    rows = query(database, "SELECT image_id, label, source FROM labels ORDER BY image_id")
    assert rows == [
        (1, "normal", "folder"),
        (2, "cancer", "csv:labels.csv"),
        (3, "cancer", "csv:labels.csv"),
        (4, "normal", "csv:labels.csv"),
    ]
    assert [(b.id, n) for b, n in database.labels.batches()][-1] == (batch, 3)


def test_label_counts_sorted_by_label_then_source(database, four_images):
    _set(database, {3: "normal", 4: "cancer"}, "folder")
    _set(database, {1: "normal", 2: "cancer"}, "cli")
    assert database.labels.counts() == [
        ("cancer", "cli", 1, 0),
        ("cancer", "folder", 1, 0),
        ("normal", "cli", 1, 0),
        ("normal", "folder", 1, 0),
    ]
    assert database.labels.all() == {1: "normal", 2: "cancer", 3: "normal", 4: "cancer"}


def test_a_label_needs_an_existing_image(database):
    with pytest.raises(sqlalchemy.exc.IntegrityError, match="FOREIGN KEY"):
        _set(database, {42: "cancer"}, "cli")
    assert query(database, "SELECT COUNT(*) FROM label_batches") == [(0,)]


# ---- outputs --------------------------------------------------------------------------------
def test_clusters_round_trip_per_run(database, four_images):
    run = database.runs.start("cluster", "imp", {"k": 2})
    other = database.runs.start("cluster", "imp", {"k": 3})
    database.outputs.save_clusters(run, np.array([1, 2, 3, 4]), np.array([0, 1, 1, 0]))
    database.outputs.save_clusters(other, np.array([1]), np.array([2]))
    assert database.outputs.clusters(run) == {1: 0, 2: 1, 3: 1, 4: 0}
    assert database.outputs.clusters(other) == {1: 2}
    assert database.outputs.clusters(999) == {}


def _prediction(run_id: int, image_id: int, label: str | None) -> dict:
    dist = np.array([0.75, 0.25], np.float32).tobytes()
    return {
        "run_id": run_id,
        "image_id": image_id,
        "label": label,
        "confidence": 0.2,
        "second_label": "normal",
        "margin": 0.5,
        "reached": label is not None,
        "distribution": dist,
    }


def test_predictions_from_several_chunks(database, four_images):
    run = database.runs.start("propagate", "imp", {})
    chunks = ([_prediction(run, i, "cancer") for i in (1, 2)], [_prediction(run, 3, None)])
    database.outputs.save_predictions(iter(chunks))
    got = database.outputs.predictions(run)
    assert sorted(got) == [1, 2, 3]
    assert (got[1].label, got[1].reached, got[1].margin) == ("cancer", True, 0.5)
    assert (got[3].label, got[3].reached) == (None, False)
    assert np.frombuffer(got[2].distribution, np.float32).tolist() == [0.75, 0.25]
    assert database.outputs.predictions(run + 1) == {}


def test_predictions_are_saved_in_one_transaction(database, four_images):
    run = database.runs.start("propagate", "imp", {})

    def chunks():
        yield [_prediction(run, 1, "cancer")]
        raise RuntimeError("propagation died")

    with pytest.raises(RuntimeError):
        database.outputs.save_predictions(chunks())
    assert query(database, "SELECT count(*) FROM predictions") == [(0,)]


# ---- the write lock -------------------------------------------------------------------------
def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    open_fds = len(os.listdir("/dev/fd"))
    lock = WriteLock(tmp_path)
    lock.acquire()
    try:
        assert lock.held and (tmp_path / "write.lock").read_text() == str(os.getpid())
        with pytest.raises(StoreLocked, match=rf"\(pid {os.getpid()}\)"):
            WriteLock(tmp_path).acquire()
    finally:
        lock.release()
    assert not lock.held
    again = WriteLock(tmp_path)
    again.acquire()
    assert again.held
    again.release()
    lock.release()  # releasing twice is harmless
    assert len(os.listdir("/dev/fd")) == open_fds  # every descriptor closed


def test_another_process_is_refused_while_the_lock_is_held(tmp_path):
    code = (
        "import sys\nfrom pathlib import Path\nfrom vecstore.db.lock import WriteLock\n"
        "from vecstore.errors import StoreLocked\n"
        "try:\n    WriteLock(Path(sys.argv[1])).acquire()\n"
        "except StoreLocked as exc:\n    print(exc)\n    sys.exit(3)\n"
    )
    lock = WriteLock(tmp_path)
    lock.acquire()
    try:
        r = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True
        )
    finally:
        lock.release()
    assert r.returncode == 3, r.stderr
    assert f"(pid {os.getpid()})" in r.stdout and str(tmp_path) in r.stdout


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_keep_the_lock(tmp_path):
    """flock belongs to the open file: if a forked worker kept its copy of the descriptor, the
    store would stay locked after the writer died. The writer's death is played by closing
    its descriptor without unlocking, while the child still runs."""
    lock = WriteLock(tmp_path)
    lock.acquire()
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: say it runs (fork handlers done), then wait to be let go
        try:
            os.write(ready_w, b"x")
            os.read(go_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)  # the child's ends: a child that died reads as b"", never a hang
    os.close(go_r)
    try:
        assert os.read(ready_r, 1) == b"x"
        fd, lock._fd = lock._fd, None  # the writer "dies": its descriptor closes, no LOCK_UN
        lock_module._HELD_LOCK_FDS.discard(fd)
        os.close(fd)
        successor = WriteLock(tmp_path)
        successor.acquire()  # StoreLocked here if the child still held the open file
        successor.release()
    finally:
        os.write(go_w, b"x")
        os.waitpid(pid, 0)
        os.close(ready_r)
        os.close(go_w)
