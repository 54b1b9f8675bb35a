"""Bad input never crashes a run nor loses work; a killed ingest resumes; one writer at a time."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import make_image


def _bad_files(root: Path) -> dict[str, str]:
    """Files that must be recorded as failed, with a word their reason must contain."""
    good = make_image(root / "good" / "ok.png", seed=1)
    data = good.read_bytes()
    (root / "bad").mkdir(parents=True)
    (root / "bad" / "truncated.png").write_bytes(data[: len(data) // 2])
    corrupt = bytearray(data)
    corrupt[60:90] = b"\x00" * 30  # damaged IDAT data: a header that decodes to garbage
    (root / "bad" / "corrupt.png").write_bytes(bytes(corrupt))
    (root / "bad" / "empty.png").write_bytes(b"")
    (root / "bad" / "notes.jpg").write_text("this is a text file with an image name")
    return {
        "truncated.png": "",
        "corrupt.png": "",
        "empty.png": "empty",
        "notes.jpg": "not an image",
    }


def test_bad_files_are_recorded_with_reasons_and_skipped(tmp_path, cli, db):
    expected = _bad_files(tmp_path / "in")
    make_image(tmp_path / "in" / "good" / "ok2.png", seed=2)
    result = cli("ingest", tmp_path / "in", "--space", "pixels")
    assert result.exit_code == 0, result.output
    assert "added 2" in result.output and f"failed {len(expected)}" in result.output
    failed = {
        Path(p).name: e for p, e in db("SELECT path, error FROM images WHERE status='failed'")
    }
    assert set(failed) == set(expected)
    for name, word in expected.items():
        assert word in failed[name] and failed[name]  # a reason, never empty
        assert f"failed: {tmp_path / 'in' / 'bad' / name}" in result.output
    assert db("SELECT COUNT(*) FROM vectors") == [(2,)]
    info = cli("info", "--failed")
    assert "truncated.png" in info.output and "not an image" in info.output
    # --strict: same work done, but the exit status says something failed
    strict = cli("ingest", tmp_path / "in", "--strict")
    assert strict.exit_code == 1 and "files failed (--strict)" in strict.output
    assert db("SELECT COUNT(*) FROM images WHERE status='ok'") == [(2,)]


def test_unreadable_file_is_recorded_and_retried_once_readable(tmp_path, cli, db, monkeypatch):
    make_image(tmp_path / "in" / "a.png", seed=1)
    locked = make_image(tmp_path / "in" / "locked.png", seed=2)
    os.chmod(locked, 0)
    if os.geteuid() == 0:  # root reads mode-000 files: make the read fail as it would for a user
        import builtins

        real_open = builtins.open

        def deny(file, *a, **k):
            if str(file) == str(locked):
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *a, **k)

        monkeypatch.setattr(builtins, "open", deny)
    result = cli("ingest", tmp_path / "in", "--space", "pixels")
    assert result.exit_code == 0, result.output
    assert "locked.png: cannot read file: Permission denied" in result.output
    assert db("SELECT status, sha256 FROM images WHERE path LIKE '%locked.png'") == [
        ("failed", None)
    ]
    again = cli("ingest", tmp_path / "in")  # still unreadable: same row, no duplicate
    assert again.exit_code == 0
    assert db("SELECT COUNT(*) FROM images") == [(2,)]
    monkeypatch.undo()
    os.chmod(locked, 0o644)
    fixed = cli("ingest", tmp_path / "in", "--json")
    rep = json.loads(fixed.stdout)
    assert rep["added"] == 1 and rep["failed"] == []
    assert db("SELECT COUNT(*), SUM(status='ok') FROM images") == [(2, 2)]


def test_symlink_loop_and_odd_names(tmp_path, cli, db):
    root = tmp_path / "in"
    names = ["with space.png", "ümlaut-é.png", "脳スキャン.PNG", "semi;colon 'quote'.tif"]
    for i, name in enumerate(names):
        make_image(root / "sub dir" / name, seed=i)
    os.symlink(root, root / "sub dir" / "loop")  # a folder that contains itself
    os.symlink(root / "nowhere.png", root / "dangling.png")
    result = cli("ingest", root, "--space", "pixels")
    assert result.exit_code == 0, result.output
    assert "added 4" in result.output
    stored = {
        Path(p).name
        for (p,) in db(
            "SELECT p.path FROM image_paths p JOIN images i ON i.id=p.image_id WHERE i.status='ok'"
        )
    }
    assert stored == set(names)
    q = cli("query", root / "sub dir" / "脳スキャン.PNG", "-k", "3", "--json")
    assert q.exit_code == 0 and len(q.stdout.splitlines()) == 3
    assert "dangling.png: cannot stat file" in result.output


def _vecstore(*args: str, store: Path) -> list[str]:
    return [sys.executable, "-m", "vecstore.cli", "--store", str(store), *args]


def _count(store: Path, sql: str) -> int:
    try:
        con = sqlite3.connect(store / "vecstore.db", timeout=5)
        try:
            return con.execute(sql).fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:  # store not created yet
        return 0


@pytest.mark.slow
def test_sigkill_mid_ingest_leaves_a_consistent_store_that_resumes(tmp_path):
    root, store = tmp_path / "in", tmp_path / "store"
    n = 48
    for i in range(n):
        make_image(root / f"img{i:03d}.png", seed=i, size=64)
    # A CNN space with small batches: slow enough to be killed between two committed batches.
    cmd = _vecstore(
        "ingest",
        str(root),
        "--space",
        "resnet18",
        "--weights",
        "random",
        "--batch-size",
        "4",
        "--workers",
        "0",
        store=store,
    )
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    sql = "SELECT COUNT(*) FROM vectors"
    while _count(store, sql) < 8 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "ingest ended before it could be killed; make the job bigger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = _count(store, sql)
    assert 8 <= done < n, done
    # each chunk's images land with their vectors: no image is left half made
    assert _count(store, "SELECT COUNT(*) FROM images") == done

    check = subprocess.run(_vecstore("check", store=store), capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "store is consistent" in check.stdout and "not embedded yet" not in check.stdout
    resumed = subprocess.run(
        _vecstore("ingest", str(root), "--json", store=store), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    rep = json.loads(resumed.stdout)
    assert rep["added"] == n - done and rep["unchanged"] == done
    assert rep["embedded"][0]["embedded"] == n - done
    assert _count(store, "SELECT COUNT(*) FROM images") == n
    assert _count(store, "SELECT COUNT(*) FROM image_paths") == n
    assert _count(store, "SELECT COUNT(*) FROM vectors") == n
    assert (
        _count(
            store,
            "SELECT COUNT(*) FROM (SELECT image_id FROM vectors GROUP BY image_id, space_id "
            "HAVING COUNT(*) > 1)",
        )
        == 0
    )
    final = subprocess.run(_vecstore("check", store=store), capture_output=True, text=True)
    assert final.returncode == 0 and "index and database agree on 48 ids" in final.stdout


@pytest.mark.slow
def test_sigkill_during_scan_then_resume(tmp_path):
    root, store = tmp_path / "in", tmp_path / "store"
    n = 1200
    for i in range(n):
        make_image(root / f"d{i // 100}" / f"img{i:04d}.png", seed=i, size=24)
    proc = subprocess.Popen(
        _vecstore("ingest", str(root), "--space", "hog", store=store),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while (
        _count(store, "SELECT COUNT(*) FROM images") == 0
        and time.time() < deadline
        and proc.poll() is None
    ):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = _count(store, "SELECT COUNT(*) FROM images")
    # what was committed is whole: every image row has its vector (same transaction)
    assert _count(store, "SELECT COUNT(*) FROM vectors") == partial
    assert subprocess.run(_vecstore("check", store=store), capture_output=True).returncode == 0
    resumed = subprocess.run(
        _vecstore("ingest", str(root), "--json", store=store), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    rep = json.loads(resumed.stdout)
    assert rep["added"] == n - partial and rep["unchanged"] == partial
    assert _count(store, "SELECT COUNT(*) FROM images") == n
    assert _count(store, "SELECT COUNT(*) FROM vectors") == n


HOLD_LOCK = (
    "import sys, time\n"
    "from vecstore.store import Store\n"
    "s = Store.open(sys.argv[1], write=True, purpose='ingest')\n"
    "print('locked', flush=True)\n"
    "time.sleep(float(sys.argv[2]))\n"
)


def test_a_writer_told_to_wait_gets_the_lock_when_the_other_ends(image_dir, tmp_path, cli, db):
    store = tmp_path / "store"
    assert cli("ingest", image_dir, "--space", "pixels").exit_code == 0
    target = image_dir / "unlabeled" / "u0.png"
    args = [sys.executable, "-c", HOLD_LOCK, str(store)]
    with subprocess.Popen([*args, "60"], stdout=subprocess.PIPE, text=True) as holder:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        r = cli("--wait", "0.5", "labels", "set", target, "normal")
        waited = time.monotonic() - t0
        holder.kill()
    # refused after the wait, naming what holds the lock; nothing written
    assert r.exit_code == 1 and f"pid {holder.pid}: ingest" in r.output, r.output
    assert waited >= 0.5
    assert db("SELECT COUNT(*) FROM labels WHERE source = 'cli'") == [(0,)]
    with subprocess.Popen([*args, "1.5"], stdout=subprocess.PIPE, text=True) as holder:
        assert holder.stdout.readline().strip() == "locked"
        r = cli("--wait", "30", "labels", "set", target, "normal")
    assert r.exit_code == 0, r.output  # waited for the holder to end, then wrote
    assert db("SELECT label FROM labels WHERE source = 'cli'") == [("normal",)]


@pytest.mark.slow
def test_second_writer_is_refused_while_queries_keep_working(image_dir, tmp_path, cli):
    store = tmp_path / "store"
    assert cli("ingest", image_dir, "--space", "pixels").exit_code == 0
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from vecstore.store import Store\n"
            f"s = Store.open({str(store)!r}, write=True)\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = cli("ingest", image_dir)
        assert r.exit_code == 1
        assert (
            "store is locked by another vecstore process" in r.output
            and f"pid {holder.pid}" in r.output
        )
        assert cli("embed", "--space", "hog").exit_code == 1
        q = cli("query", image_dir / "unlabeled" / "u0.png", "-k", "2", "--json")
        assert q.exit_code == 0 and len(q.stdout.splitlines()) == 2
        assert cli("info").exit_code == 0 and cli("check").exit_code == 0
    finally:
        holder.communicate("")
    assert cli("embed", "--space", "hog").exit_code == 0  # lock released with its holder
