"""Fault injection: each writing command is SIGKILLed at increasing delays (seeded), and the
store it leaves is checked with plain sqlite3 and faiss: expert labels kept (a label command
lands whole or not at all), no duplicate rows, ids never reused, FAISS ids equal to the
database's once caught up, a complete export, and a follow-up run that resumes cleanly."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from vecstore.cli import main

from .conftest import make_image

SEED = 20261123
KILLS = 8  # kill points per command
STARTUP_KILLS = 2  # of which while Python starts (before the store is opened)
BASE_IMAGES = 40
NEW_IMAGES = 20
TRIED: dict[str, dict[str, int]] = {}  # command -> kill points tried (and what they hit)


def _vecstore(*args: object, store: Path) -> list[str]:
    return [sys.executable, "-m", "vecstore.cli", "--store", str(store), *map(str, args)]


def _cli(store: Path, *args: object):
    """`vecstore --store STORE ARGS...` in this process (the checks; the killed run is not)."""
    return CliRunner().invoke(main, ["--store", str(store), *map(str, args)])


def _rows(store: Path, sql: str, *params) -> list[tuple]:
    con = sqlite3.connect(store / "vecstore.db", timeout=10)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def _one(store: Path, sql: str, *params):
    return _rows(store, sql, *params)[0][0]


# ---- the store every command is killed on -----------------------------------------------------


def _build_base(root: Path) -> tuple[Path, Path]:
    """data/ (40 images) ingested in `pixels`, two label batches (12 labels, then 6 more and 3
    replaced), one propagation: the store a kill point starts from (copied each time)."""
    data, store = root / "data", root / "store"
    for i in range(BASE_IMAGES):
        make_image(data / f"a{i:03d}.png", seed=i)
    assert _cli(store, "ingest", data, "--space", "pixels").exit_code == 0
    first = root / "first.csv"
    _write_labels(first, data, range(12))
    assert _cli(store, "labels", "import", first, "--new-class").exit_code == 0
    second = root / "second.csv"
    _write_labels(second, data, range(9, 18), flip=True)
    r = _cli(store, "labels", "import", second, "--replace")
    assert r.exit_code == 0, r.output
    r = _cli(store, "propagate", "--space", "pixels")
    assert r.exit_code == 0, r.output
    return data, store


def _write_labels(csv: Path, data: Path, idx, *, flip: bool = False) -> None:
    rows = [f"{data / f'a{i:03d}.png'},{'xy'[(i + flip) % 2]}" for i in idx]
    csv.write_text("path,label\n" + "\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, Path]:
    return _build_base(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module", autouse=True)
def _summary():
    yield
    if TRIED:
        total = sum(t["kills"] for t in TRIED.values())
        print("\nfault injection: kill points per command")
        for cmd, t in TRIED.items():
            print(f"  {cmd:<15} {t}")
        print(f"  total kill points: {total}")


# ---- what each command is, and what it is run on ----------------------------------------------


@dataclass
class Command:
    name: str
    args: Callable[[Path, Path], list[object]]  # (work folder, data folder) -> arguments
    prepare: Callable[[Path, Path], None] = lambda root, data: None  # once, on the data
    label_cmd: bool = False  # changes the expert labels: lands whole or not at all
    spaces: list[str] = field(default_factory=lambda: ["pixels"])


def _more_images(root: Path, data: Path) -> None:
    """New files beside the stored ones, and a labeled file rewritten with other pixels."""
    for i in range(NEW_IMAGES):
        make_image(data / "new" / f"n{i:03d}.png", seed=500 + i)
    make_image(data / "a000.png", seed=999)


def _relabel_csv(root: Path, data: Path) -> None:
    _write_labels(root / "third.csv", data, range(15, 30))  # 12 new, 3 replaced


def _vector_file(root: Path, data: Path) -> None:
    rng = np.random.default_rng(7)
    np.save(root / "vec.npy", rng.normal(size=(BASE_IMAGES, 16)).astype(np.float32))
    paths = [str(data / f"a{i:03d}.png") for i in range(BASE_IMAGES)]
    (root / "paths.txt").write_text("\n".join(paths) + "\n")


COMMANDS = [
    Command("ingest", lambda w, d: ["ingest", d], _more_images),
    Command(
        "labels import",
        lambda w, d: ["labels", "import", w.parent / "third.csv", "--replace"],
        _relabel_csv,
        label_cmd=True,
    ),
    Command("labels undo", lambda w, d: ["labels", "undo"], label_cmd=True),
    Command("propagate", lambda w, d: ["propagate", "--space", "pixels"]),
    Command("cluster", lambda w, d: ["cluster", "--space", "pixels", "-k", "3", "--n-init", "3"]),
    Command("export", lambda w, d: ["export", "-o", w / "out.csv"]),
    Command(
        "import-vectors",
        lambda w, d: (
            ["import-vectors", w.parent / "vec.npy", "--paths", w.parent / "paths.txt"]
            + ["--space", "ext"]
        ),
        _vector_file,
        spaces=["pixels", "ext"],
    ),
    Command("reindex", lambda w, d: ["reindex"]),
]


# ---- snapshots and invariants -----------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    labels: tuple  # (path, label, source, review_reason), sorted
    batches: int
    events: int
    images: int
    vectors: tuple  # (space, count), sorted
    seq: int  # the largest image id ever given
    path_ids: tuple  # (path, image id), sorted


def snapshot(store: Path) -> Snapshot:
    labels = _rows(
        store,
        "SELECT COALESCE(p.path, '#' || l.image_id), l.label, l.source, l.review_reason "
        "FROM labels l LEFT JOIN image_paths p ON p.image_id = l.image_id ORDER BY 1",
    )
    return Snapshot(
        labels=tuple(labels),
        batches=_one(store, "SELECT COUNT(*) FROM label_batches"),
        events=_one(store, "SELECT COUNT(*) FROM label_events"),
        images=_one(store, "SELECT COUNT(*) FROM images WHERE status = 'ok'"),
        vectors=tuple(
            _rows(
                store,
                "SELECT s.name, COUNT(v.image_id) FROM spaces s "
                "LEFT JOIN vectors v ON v.space_id = s.id GROUP BY s.name ORDER BY s.name",
            )
        ),
        seq=_one(store, "SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name='images'"),
        path_ids=tuple(_rows(store, "SELECT path, image_id FROM image_paths ORDER BY path")),
    )


def _expert(snap: Snapshot) -> dict[str, str]:
    return {path: label for path, label, _, _ in snap.labels}


DUPLICATES = {
    "image_paths.path": "SELECT path FROM image_paths GROUP BY path HAVING COUNT(*) > 1",
    "vectors (space, image)": "SELECT space_id, image_id FROM vectors "
    "GROUP BY space_id, image_id HAVING COUNT(*) > 1",
    "labels.image_id": "SELECT image_id FROM labels GROUP BY image_id HAVING COUNT(*) > 1",
    "images.sha256": "SELECT sha256 FROM images WHERE sha256 IS NOT NULL "
    "GROUP BY sha256 HAVING COUNT(*) > 1",
}


def check_rows(store: Path, before: Snapshot, after: Snapshot, cmd: Command) -> Snapshot:
    """(a) the expert labels, (b) no duplicate rows, ids never reused, rows whole."""
    assert _rows(store, "PRAGMA integrity_check") == [("ok",)]
    assert _rows(store, "PRAGMA foreign_key_check") == []
    now = snapshot(store)
    # (a) a label command lands whole or not at all; any other keeps every label as it was
    assert now.labels in (before.labels, after.labels), cmd.name
    assert (now.batches, now.events) in (
        (before.batches, before.events),
        (after.batches, after.events),
    )
    if not cmd.label_cmd:
        assert _expert(now) == _expert(before)
    # (b) no duplicates
    for what, sql in DUPLICATES.items():
        assert _rows(store, sql) == [], f"duplicate {what} after a killed {cmd.name}"
    # a descriptor vector is written with its image row: every usable image has one
    assert (
        _rows(
            store,
            "SELECT i.id FROM images i WHERE i.status = 'ok' AND i.sha256 IS NOT NULL "
            "AND NOT EXISTS "
            "(SELECT 1 FROM vectors v JOIN spaces s ON s.id = v.space_id "
            "WHERE s.name = 'pixels' AND v.image_id = i.id)",
        )
        == []
    )
    # ids never reused: a path keeps its image id, or (its bytes changed) gets one never given
    assert before.seq <= now.seq <= after.seq
    was, changed = dict(before.path_ids), dict(after.path_ids)
    for path, iid in now.path_ids:
        if path in was and iid != was[path]:
            assert changed[path] != was[path] and iid > before.seq, path
        elif path not in was:
            assert iid > before.seq, path
    return now


def index_ids(store: Path, space: str) -> np.ndarray:
    index = faiss.read_index(str(store / "index" / f"{space}.faiss"))
    return np.sort(faiss.vector_to_array(index.id_map))


def db_ids(store: Path, space: str) -> np.ndarray:
    ids = _rows(
        store,
        "SELECT v.image_id FROM vectors v JOIN spaces s ON s.id = v.space_id "
        "WHERE s.name = ? ORDER BY 1",
        space,
    )
    return np.array([i for (i,) in ids], np.int64)


def check_indexes(store: Path, cmd: Command) -> dict:
    """(c) `vecstore check` on the killed store, then a query per space (which catches its
    index up and saves it): every index file holds exactly the space's ids."""
    r = _cli(store, "check", "--json")
    rep = json.loads(r.stdout.splitlines()[0])
    assert r.exit_code == 0 and rep["ok"], rep["problems"]
    for space in cmd.spaces:
        ids = db_ids(store, space)
        if not len(ids):  # a space created, none of its rows yet (import-vectors)
            assert not (store / "index" / f"{space}.faiss").exists()
            continue
        q = _cli(store, "query", "--id", int(ids[0]), "--space", space, "-k", "3", "--json")
        assert q.exit_code == 0, q.output
        assert len(q.stdout.splitlines()) == 3
        np.testing.assert_array_equal(index_ids(store, space), ids)
    return rep


def check_resumed(store: Path, work: Path, data: Path, after: Snapshot, cmd: Command) -> None:
    """(e) the same command run again, not killed, ends the store where a clean run does; then
    `vecstore check` exits 0 with every index in agreement, and (d) the export is whole."""
    if cmd.name == "labels undo" and snapshot(store).labels == after.labels:
        # the undo landed: running it again would undo the batch before; it is marked undone
        assert _one(store, "SELECT COUNT(*) FROM label_batches WHERE undone_by IS NOT NULL") == 1
    else:
        r = _cli(store, *cmd.args(work, data))
        assert r.exit_code == 0, r.output
    now = snapshot(store)
    assert now.labels == after.labels
    assert (now.images, now.vectors) == (after.images, after.vectors)
    assert (now.batches, now.seq) == (after.batches, after.seq)
    r = _cli(store, "check", "--json")
    rep = json.loads(r.stdout.splitlines()[0])
    assert r.exit_code == 0 and rep["ok"], rep
    for space in cmd.spaces:
        assert (
            f"space {space}: index and database agree on {len(db_ids(store, space))} ids"
            in (rep["notes"])
        ), rep
    out = work / "check-export.csv"
    assert _cli(store, "export", "-o", out).exit_code == 0
    assert len(pd.read_csv(out)) == now.images


# ---- the kill loop ----------------------------------------------------------------------------


@dataclass
class Timing:
    """A clean run: ``opened``, seconds until it had the store's database open (None where
    /proc cannot tell: then every delay counts from the start); ``total``, its duration."""

    opened: float | None
    total: float


def _has_open(pid: int, db: str) -> bool:
    """Whether process ``pid`` holds ``db`` open (read from /proc: the command is not slowed
    nor its lock touched)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == db:
                return True
        except OSError:
            continue
    return False


def _wait_open(proc: subprocess.Popen, store: Path, limit: float) -> float | None:
    """Seconds (from now) until ``proc`` opens the store's database; None if it ends first,
    or /proc is not there to tell."""
    if not os.path.isdir("/proc/self/fd"):
        return None
    db, t0 = os.path.realpath(store / "vecstore.db"), time.perf_counter()
    while proc.poll() is None and time.perf_counter() - t0 < limit:
        if _has_open(proc.pid, db):
            return time.perf_counter() - t0
        time.sleep(0.005)
    return None


def _clean_run(args: list[str], store: Path) -> Timing:
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    opened = _wait_open(proc, store, 60)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 0, err.decode()[-2000:]
    return Timing(opened, time.perf_counter() - t0)


def _delays(t: Timing, seed: int) -> list[tuple[float, bool]]:
    """KILLS increasing delays (seconds, and whether counted from the moment the store is
    opened) spanning 0.05 s to the command's normal duration: STARTUP_KILLS while Python
    starts and imports, the others spread (stratified, seeded) over the command's work."""
    rng = random.Random(seed)
    if t.opened is None:
        return [(0.05 + (t.total - 0.05) * (i + rng.random()) / KILLS, False) for i in range(KILLS)]
    early = [
        (0.05 + (t.opened - 0.05) * (i + rng.random()) / STARTUP_KILLS, False)
        for i in range(STARTUP_KILLS)
    ]
    work, n = t.total - t.opened, KILLS - STARTUP_KILLS
    return early + [(work * (i + rng.random()) / n, True) for i in range(n)]


def _marks(store: Path, work: Path) -> tuple:
    """What a command leaves besides labels and vectors: finished runs, an export, index files
    (to count the kills that came after the command's work had landed)."""
    files = sorted((store / "index").glob("*.faiss"))
    return (
        _one(store, "SELECT COUNT(*) FROM runs WHERE status = 'done'"),
        (work / "out.csv").exists(),
        tuple((f.name, f.stat().st_mtime_ns) for f in files),
    )


def _did_its_work(
    cmd: Command, before: Snapshot, after: Snapshot, clean: Path, base_store: Path
) -> None:
    """The clean run changed what its command changes: a kill point has something to cut."""
    store = clean / "store"
    runs = _rows(store, "SELECT kind FROM runs WHERE status = 'done' ORDER BY id DESC LIMIT 1")
    if cmd.name == "ingest":
        assert after.images == before.images + NEW_IMAGES
        a0 = [lab for lab in after.labels if lab[0].endswith("a000.png")]
        assert a0 and a0[0][3] == "content changed since labeled", a0  # kept, flagged
        assert _expert(after) == _expert(before)
    elif cmd.label_cmd:
        assert after.labels != before.labels and after.batches == before.batches + 1
    else:
        assert after.labels == before.labels
    if cmd.name in ("propagate", "cluster"):
        assert runs == [(cmd.name,)]
    if cmd.name == "export":
        assert len(pd.read_csv(clean / "out.csv")) == after.images
    if cmd.name == "import-vectors":
        assert dict(after.vectors)["ext"] == BASE_IMAGES
    if cmd.name == "reindex":
        assert _marks(store, clean)[2] != _marks(base_store, clean)[2]  # index files saved


def _fresh(base_store: Path, work: Path) -> Path:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    store = work / "store"
    shutil.copytree(base_store, store)
    return store


def _run_killed(args: list[str], store: Path, delay: float, after_open: bool) -> bool:
    """Start the command, SIGKILL it ``delay`` seconds after it starts (or after it opens the
    store); True when it was still running then."""
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if after_open and _wait_open(proc, store, 60) is None and proc.poll() is not None:
        return False
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: c.name.replace(" ", "-"))
def test_sigkill_at_any_moment_keeps_the_store_whole(cmd, base, tmp_path):
    if cmd.name == "ingest":  # it rewrites a data file: a base of its own
        data, base_store = _build_base(tmp_path / "own")
    else:
        data, base_store = base
    cmd.prepare(tmp_path, data)
    before = snapshot(base_store)

    # one clean run in a subprocess: its timing places the kills, its store is `after`
    clean = tmp_path / "clean"
    store = _fresh(base_store, clean)
    timing = _clean_run(_vecstore(*cmd.args(clean, data), store=store), store)
    after = snapshot(store)
    _did_its_work(cmd, before, after, clean, base_store)
    base_marks = _marks(base_store, base_store.parent)
    tried = {"kills": 0, "finished_first": 0, "mid_run": 0, "landed": 0}
    for n, (delay, after_open) in enumerate(_delays(timing, SEED + COMMANDS.index(cmd))):
        work = tmp_path / f"k{n}"
        store = _fresh(base_store, work)
        args = _vecstore(*cmd.args(work, data), store=store)
        if not _run_killed(args, store, delay, after_open):
            tried["finished_first"] += 1
            continue
        tried["kills"] += 1
        tried["mid_run"] += _one(store, "SELECT COUNT(*) FROM runs WHERE status = 'running'")
        now = check_rows(store, before, after, cmd)
        tried["landed"] += now != before or _marks(store, work) != base_marks
        if cmd.name == "export" and (work / "out.csv").exists():  # written whole or not at all
            assert len(pd.read_csv(work / "out.csv")) == after.images
        check_indexes(store, cmd)
        check_resumed(store, work, data, after, cmd)
        shutil.rmtree(work)
    TRIED[cmd.name] = {
        **tried,
        "opened_s": round(timing.opened or 0, 2),
        "normal_s": round(timing.total, 2),
    }
    print(f"\n{cmd.name}: {TRIED[cmd.name]}")
    assert tried["kills"] >= KILLS // 2, tried  # the delays do reach into the running command


# ---- one kill point placed exactly --------------------------------------------------------------

KILL_AT_INDEX_SAVE = """
import os, sys
from vecstore.search import index
index.SpaceIndex.save = lambda self, path, owner: os._exit(9)  # killed as the index is saved
from vecstore.cli import main
main(sys.argv[1:])
"""


def test_kill_after_an_image_is_deleted_before_its_index_is_saved(tmp_path):
    """A rewritten file's old image is deleted with the chunk that replaces it; the index file
    is saved at the end of the run. Killed in between, the saved index still holds the deleted
    image's id: a cache behind the database (the id is never given again), not a problem."""
    data, store = _build_base(tmp_path)
    old_id = _one(store, "SELECT image_id FROM image_paths WHERE path = ?", str(data / "a000.png"))
    make_image(data / "a000.png", seed=999)  # other pixels: a new image, the old one deleted
    args = [sys.executable, "-c", KILL_AT_INDEX_SAVE, "--store", str(store), "ingest", str(data)]
    assert subprocess.run(args, capture_output=True).returncode == 9
    assert _rows(store, "SELECT id FROM images WHERE id = ?", old_id) == []
    assert old_id in index_ids(store, "pixels")
    r = _cli(store, "check", "--json")
    rep = json.loads(r.stdout.splitlines()[0])
    assert r.exit_code == 0 and rep["ok"], rep["problems"]
    assert any("1 images deleted since it was saved" in w for w in rep["warnings"]), rep
    q = _cli(store, "query", "--id", old_id + 1, "--space", "pixels", "-k", "3", "--json")
    assert q.exit_code == 0, q.output
    np.testing.assert_array_equal(index_ids(store, "pixels"), db_ids(store, "pixels"))
    assert "index and database agree" in _cli(store, "check").output
