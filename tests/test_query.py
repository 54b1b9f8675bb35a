"""`vecstore query`, `info`, `check`, `reindex`."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import threading
import time

import faiss
import numpy as np

from vecstore.db import head_revision
from vecstore.search.cache import SharedLock
from vecstore.store import Store

from .conftest import make_image


def _ingest(cli, image_dir, *spaces):
    args = ["ingest", image_dir, "--labels-from-folders"]
    for s in spaces or ("pixels",):
        args += ["--space", s]
    result = cli(*args)
    assert result.exit_code == 0, result.output


def test_query_stored_image_excludes_itself_and_ranks_by_similarity(image_dir, cli, store_path):
    _ingest(cli, image_dir)
    target = image_dir / "labeled" / "normal" / "n0.png"
    result = cli("query", target, "-k", "5", "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 5
    assert {"rank", "id", "path", "similarity", "label"} <= set(rows[0])
    assert str(target) not in [r["path"] for r in rows]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    sims = [r["similarity"] for r in rows]
    assert sims == sorted(sims, reverse=True)
    # the similarities are cosine similarities of the stored vectors
    with Store.open(store_path) as store:
        sp = store.get_space("pixels")
        ids, vecs = store.vectors(sp)
    by_id = dict(zip(ids.tolist(), vecs))
    with Store.open(store_path) as store:
        q = by_id[store.image_by_path(str(target)).id]
    for r in rows:
        v = by_id[r["id"]]
        cos = float(q @ v / np.linalg.norm(q) / np.linalg.norm(v))
        assert abs(cos - r["similarity"]) < 1e-4


def test_query_by_id_and_labels_in_table_and_csv(image_dir, cli, db):
    _ingest(cli, image_dir)
    [(cid,)] = db(
        "SELECT i.id FROM images i JOIN image_paths p ON p.image_id=i.id WHERE p.path LIKE "
        "'%c0.png'"
    )
    result = cli("query", "--id", cid, "-k", "9")
    assert result.exit_code == 0, result.output
    assert "rank" in result.stdout and "similarity" in result.stdout
    assert "cancer" in result.stdout and "normal" in result.stdout  # every other image is listed
    result = cli("query", "--id", cid, "-k", "3", "--csv")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 3 and set(rows[0]) >= {"rank", "id", "path", "similarity", "label"}
    assert int(rows[0]["id"]) != cid


def test_query_outside_file_is_embedded_with_the_space_model(image_dir, tmp_path, cli):
    _ingest(cli, image_dir)
    outside = tmp_path / "elsewhere" / "q.png"
    outside.parent.mkdir()
    outside.write_bytes((image_dir / "unlabeled" / "u3.png").read_bytes())
    other = make_image(
        tmp_path / "elsewhere" / "new.png", seed=200 + 3, size=40
    )  # u3's picture, other size
    # identical bytes elsewhere are the same image: excluded like a stored one
    rows = [json.loads(x) for x in cli("query", outside, "-k", "9", "--json").stdout.splitlines()]
    assert len(rows) == 9 and all(not r["path"].endswith("u3.png") for r in rows)
    rows = [json.loads(x) for x in cli("query", other, "-k", "1", "--json").stdout.splitlines()]
    assert rows[0]["path"].endswith("u3.png") and rows[0]["similarity"] > 0.95


def test_query_errors(image_dir, cli, tmp_path):
    _ingest(cli, image_dir)
    r = cli("query", "--id", "99999")
    assert r.exit_code == 1 and "no image with id 99999" in r.output
    r = cli("query", "--id", "1", "--space", "resnet50")
    assert r.exit_code == 1 and "space 'resnet50' is not in this store" in r.output
    r = cli("query")
    assert r.exit_code == 2 and "exactly one" in r.output
    (tmp_path / "bad.png").write_bytes(b"garbage")
    r = cli("query", tmp_path / "bad.png")
    assert r.exit_code == 1 and "cannot use" in r.output and "not an image" in r.output
    r = cli("query", "--id", "1", "-k", "0")
    assert r.exit_code == 2


def test_info_reports_spaces_labels_and_schema(image_dir, cli):
    _ingest(cli, image_dir, "pixels", "hog")
    r = cli("info", "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert (
        info["images"] == 10 and info["failed"] == 0 and info["schema_version"] == head_revision()
    )
    assert [(s["name"], s["dim"], s["vectors"]) for s in info["spaces"]] == [
        ("pixels", 256, 10),
        ("hog", 324, 10),
    ]
    assert all(s["index_file"] for s in info["spaces"])
    assert {(lab["label"], lab["count"]) for lab in info["labels"]} == {
        ("cancer", 3),
        ("normal", 3),
    }
    text = cli("info").output
    assert "Flat (auto), exact" in text and "cancer" in text and f"schema {head_revision()}" in text


def test_check_passes_then_finds_missing_files_and_foreign_index_ids(image_dir, cli, store_path):
    _ingest(cli, image_dir)
    r = cli("check")
    assert r.exit_code == 0, r.output
    assert "index and database agree on 10 ids" in r.output
    # a stray id in the FAISS file (not in the database) is a problem
    idx_path = store_path / "index" / "pixels.faiss"
    index = faiss.read_index(str(idx_path))
    index.add_with_ids(np.ones((1, 256), np.float32), np.array([777], dtype=np.int64))
    faiss.write_index(index, str(idx_path))
    r = cli("check")  # the file is no longer the one saved with its sidecar
    assert r.exit_code == 1 and "does not match the space" in r.output
    # reindex rebuilds it from the database
    r = cli("reindex")
    assert r.exit_code == 0 and "Flat rebuilt with 10 vectors" in r.output
    assert cli("check").exit_code == 0
    # the database lost a row the saved index still has (an older backup restored, say)
    con = sqlite3.connect(store_path / "vecstore.db")
    con.execute("DELETE FROM vectors WHERE image_id = 3")
    con.commit()
    con.close()
    r = cli("check")
    assert r.exit_code == 1 and "index holds 1 ids the database does not have" in r.output
    r = cli("reindex")
    assert r.exit_code == 0 and "Flat rebuilt with 9 vectors" in r.output
    assert cli("check").exit_code == 0
    os.remove(image_dir / "unlabeled" / "u2.png")
    r = cli("check")
    assert r.exit_code == 1 and "1 files missing on disk" in r.output and "u2.png" in r.output


def test_index_file_is_a_cache_rebuilt_from_the_database(image_dir, cli, store_path):
    _ingest(cli, image_dir)
    before = cli("query", "--id", "1", "-k", "3", "--json").stdout
    (store_path / "index" / "pixels.faiss").unlink()
    r = cli("check")
    assert r.exit_code == 0 and "no index file" in r.output
    assert cli("query", "--id", "1", "-k", "3", "--json").stdout == before
    (store_path / "index" / "pixels.faiss").write_bytes(b"corrupt")
    assert cli("check").exit_code == 1
    assert cli("query", "--id", "1", "-k", "3", "--json").stdout == before


def test_bad_vector_blob_is_a_problem(image_dir, cli, store_path, db):
    import sqlite3

    _ingest(cli, image_dir)
    con = sqlite3.connect(store_path / "vecstore.db")
    con.execute("UPDATE vectors SET vector=x'00' WHERE image_id=1")
    con.commit()
    con.close()
    r = cli("check")
    assert r.exit_code == 1 and "vectors of the wrong length" in r.output


def test_index_file_is_written_only_when_it_changes(image_dir, cli, store_path):
    _ingest(cli, image_dir)
    idx = store_path / "index" / "pixels.faiss"
    before = idx.stat().st_mtime_ns
    assert cli("ingest", image_dir).exit_code == 0  # nothing new
    assert idx.stat().st_mtime_ns == before
    make_image(image_dir / "unlabeled" / "late.png", seed=777)
    assert cli("ingest", image_dir).exit_code == 0
    assert idx.stat().st_mtime_ns != before
    assert "index and database agree on 11 ids" in cli("check").output


def _calls_of(repo, method: str) -> list[str]:
    """The spaces a repository's ``method`` is called for from now on, in order."""
    calls, real = [], getattr(repo, method)
    setattr(repo, method, lambda sp: calls.append(sp.name) or real(sp))
    return calls


def test_a_label_write_does_not_make_a_query_reread_the_index_ids(image_dir, cli, store_path):
    """The index cache watches the space's vectors (a mark read in O(1)), not every write:
    after a label is set, the next query reads no id list and syncs nothing; after new
    vectors, it takes in the rows written since, still without reading the space's every
    id (after each commit of an ingest beside `vecstore serve`: 100k ids)."""
    _ingest(cli, image_dir)
    with Store.open(store_path) as store:
        reads = _calls_of(store._db.vectors, "ids")
        assert len(store.query(image_id=1, k=3).hits) == 3
        first = len(reads)
        assert cli("labels", "set", image_dir / "unlabeled" / "u0.png", "normal").exit_code == 0
        assert len(store.query(image_id=1, k=3).hits) == 3
        assert len(reads) == first  # a label changed, no vector: nothing re-read
        make_image(image_dir / "more" / "m0.png", seed=4242)
        assert cli("ingest", image_dir, "--space", "pixels").exit_code == 0
        hits = store.query(image_id=1, k=20).hits
        assert len(reads) == first and len(hits) == 10  # caught up: 10 others of 11
        assert str(image_dir / "more" / "m0.png") in {h.path for h in hits}


def test_a_store_made_a_writer_for_labels_leaves_its_index_cache_a_readers(
    image_dir, cli, store_path
):
    """`Store.writing()` (a label write of `vecstore serve`) does not make the queries other
    threads run meanwhile write: an index built then records nothing in the database."""
    _ingest(cli, image_dir)
    (store_path / "index" / "pixels.faiss").unlink()
    with Store.open(store_path) as store:
        before = store.data_version()
        with store.writing():
            assert len(store.query(image_id=1, k=3).hits) == 3  # builds the index
            assert store.data_version() == before


def test_a_label_written_through_writing_leaves_the_index_cache_in_step(image_dir, cli, store_path):
    """A write through `Store.writing()` (labels, a suggestion: never vectors) is the only
    commit while it holds the lock, so the index cache held before it stays in step: the
    next query does not re-check the space's vectors (a scan of them: 15 ms at 100k, after
    every label the service writes). A write by another process still makes it check."""
    _ingest(cli, image_dir)
    with Store.open(store_path) as store:
        marks = _calls_of(store._db.vectors, "mark")
        assert len(store.query(image_id=1, k=3).hits) == 3
        first = len(marks)
        with store.writing(purpose="label") as w:
            w.set_label("2", "normal", replace=True)
            assert len(store.query(image_id=1, k=3).hits) == 3  # another thread, meanwhile
        assert len(store.query(image_id=1, k=3).hits) == 3
        assert len(marks) == first
        assert cli("labels", "set", "3", "cancer").exit_code == 0
        assert len(store.query(image_id=1, k=3).hits) == 3
        assert len(marks) == first + 1


def test_an_index_is_changed_only_when_no_search_runs_on_it():
    """The index cache's lock: searches share it; a sync of an index (FAISS add / remove,
    unsafe beside a search) waits for the running searches and keeps new ones waiting."""
    lock, log = SharedLock(), []
    searching, sync_waits = threading.Event(), threading.Event()

    def search(name: str, hold: threading.Event | None = None) -> None:
        with lock.shared():
            log.append(f"{name} in")
            if hold is not None:
                searching.set()
                hold.wait(5)
            log.append(f"{name} out")

    def sync() -> None:
        sync_waits.set()
        with lock.alone():
            log.append("sync")

    release = threading.Event()
    first = threading.Thread(target=search, args=("a", release))
    first.start()
    assert searching.wait(5)
    changer = threading.Thread(target=sync)
    changer.start()
    assert sync_waits.wait(5)
    deadline = time.monotonic() + 5
    while lock._waiting != 1 and time.monotonic() < deadline:  # the sync waits on the lock
        time.sleep(0.001)
    later = threading.Thread(target=search, args=("b",))
    later.start()
    time.sleep(0.05)  # time for b to come in, were it let in
    assert log == ["a in"]  # the sync waits for a; b waits behind the sync
    release.set()
    for t in (first, changer, later):
        t.join(5)
    assert log == ["a in", "a out", "sync", "b in", "b out"]


def test_a_search_does_not_queue_behind_another_thread_catching_the_index_up(
    image_dir, cli, store_path
):
    """After another process commits, one thread checks the index against the database (a
    scan of the space's vectors: up to 80 ms at 100k beside an ingest); the other threads
    search the index held meanwhile instead of queueing behind it."""
    _ingest(cli, image_dir)
    with Store.open(store_path) as store:
        assert len(store.query(image_id=1, k=3).hits) == 3
        assert cli("labels", "set", "3", "cancer").exit_code == 0  # another process commits
        inside, release, answers = threading.Event(), threading.Event(), []
        real = store._db.vectors.mark

        def held_mark(sp):
            inside.set()
            release.wait(20)
            return real(sp)

        store._db.vectors.mark = held_mark
        first = threading.Thread(target=lambda: answers.append(store.query(image_id=1, k=3)))
        first.start()
        assert inside.wait(10)
        second = threading.Thread(target=lambda: answers.append(store.query(image_id=2, k=3)))
        second.start()
        second.join(10)
        answered_meanwhile = not second.is_alive()  # the first still checking the index
        release.set()
        first.join(10)
        assert answered_meanwhile
        assert [a.query_id for a in answers] == [2, 1] and all(len(a.hits) == 3 for a in answers)


def test_queries_from_many_threads_while_another_process_adds_images(image_dir, cli, store_path):
    """A store read by many threads at once (`vecstore serve`) while an ingest adds images:
    every query answers, and once the ingest is seen every new image is found."""
    _ingest(cli, image_dir)
    with Store.open(store_path) as store:
        assert len(store.query(image_id=1, k=3).hits) == 3
        stop, failures, answered = threading.Event(), [], []

        def keep_querying() -> None:
            while not stop.is_set():
                try:
                    answered.append(len(store.query(image_id=1, k=50).hits))
                except Exception as exc:  # any failure is the test's failure
                    failures.append(exc)

        threads = [threading.Thread(target=keep_querying) for _ in range(4)]
        for t in threads:
            t.start()
        before = len(store.query(image_id=1, k=50).hits)
        for i in range(6):
            make_image(image_dir / "more" / f"m{i}.png", seed=5000 + i)
        assert cli("ingest", image_dir, "--space", "pixels").exit_code == 0
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join(10)
        assert failures == [] and answered
        assert len(store.query(image_id=1, k=50).hits) == before + 6


def test_an_index_drops_images_another_process_forgets(image_dir, cli, store_path):
    """A deletion is what the rows written since cannot show: after one, the index is checked
    against every id of the space again, and the forgotten image is no longer found."""
    _ingest(cli, image_dir)
    gone = str(image_dir / "unlabeled" / "u0.png")
    with Store.open(store_path) as store:
        assert gone in {h.path for h in store.query(image_id=1, k=20).hits}
        reads = _calls_of(store._db.vectors, "ids")
        assert cli("forget", gone).exit_code == 0
        paths = {h.path for h in store.query(image_id=1, k=20).hits}
        assert gone not in paths and len(paths) == 8 and len(reads) == 1
