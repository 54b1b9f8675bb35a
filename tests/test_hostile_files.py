"""Hostile files and paths (issue 12, items 8-13): names that are not UTF-8, links leaving the
ingested folder, FIFOs and devices where an image is expected, decompression bombs and huge
files, EXIF orientation, unreadable folders. Each ends with a clear message, never a hang or a
traceback, and the rest of the folder is ingested."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vecstore.embedders.classic import CLASSIC, pixel_features
from vecstore.ingest import scan
from vecstore.report import thumbnail

from .conftest import make_image

QUICK_S = 2.5  # what "ends quickly" means here; a FIFO is released after RELEASE_S
RELEASE_S = 4.0


def ok_names(db) -> set[str]:
    """The file names of the usable images' paths."""
    rows = db(
        "SELECT p.path FROM image_paths p JOIN images i ON i.id = p.image_id WHERE i.status = 'ok'"
    )
    return {os.path.basename(p) for (p,) in rows}


def vector_of(db, name: str, space: str = "pixels") -> np.ndarray:
    rows = db(
        "SELECT v.vector FROM vectors v JOIN spaces s ON s.id = v.space_id "
        "JOIN image_paths p ON p.image_id = v.image_id WHERE s.name = ? AND p.path LIKE ?",
        space,
        f"%/{name}",
    )
    assert len(rows) == 1, rows
    return np.frombuffer(rows[0][0], np.float32)


@contextlib.contextmanager
def released_fifo(path: Path):
    """A FIFO at ``path``. After RELEASE_S a writer opens and closes it, so that a reader
    stuck on it (the bug) gets EOF and the test fails on time instead of hanging forever."""
    os.mkfifo(path)
    done = threading.Event()

    def release() -> None:
        if done.wait(RELEASE_S):
            return
        while not done.is_set():
            with contextlib.suppress(OSError):  # ENXIO: no reader at this moment
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            done.wait(0.05)

    t = threading.Thread(target=release, daemon=True)
    t.start()
    try:
        yield path
    finally:
        done.set()
        t.join()


def run_cli(store: Path, *args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """`vecstore --store STORE ARGS` in a subprocess: a hang is killed at ``timeout``."""
    cmd = [sys.executable, "-m", "vecstore.cli", "--store", str(store), *args]
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`vecstore {' '.join(args)}` still running after {timeout} s")


# ---- 8. file names that are not UTF-8 ------------------------------------------------------


def test_a_file_name_that_is_not_utf8_is_skipped_and_reported(image_dir, cli, db):
    src = make_image(image_dir.parent / "elsewhere" / "x.png", seed=7)
    bad = os.path.join(os.fsencode(str(image_dir / "unlabeled")), b"bad\xffname.png")
    with open(bad, "wb") as f:
        f.write(src.read_bytes())
    r = cli("ingest", image_dir, "--space", "pixels")
    assert r.exit_code == 0, r.output
    assert "added 10" in r.output and "skipped 1" in r.output
    shown = os.fsencode(bad).decode("utf-8", "backslashreplace")
    assert shown.endswith("bad\\xffname.png")
    assert f"{shown}: file name is not valid UTF-8: rename it" in r.output
    assert db("SELECT COUNT(*) FROM images WHERE status = 'ok'") == [(10,)]
    again = cli("ingest", image_dir, "--space", "pixels", "--json")
    assert again.exit_code == 0, again.output
    skipped = json.loads(again.stdout)["skipped"]
    assert skipped == [{"path": shown, "reason": "file name is not valid UTF-8: rename it"}]
    strict = cli("ingest", image_dir, "--space", "pixels", "--strict")
    assert strict.exit_code == 1
    assert "1 skipped by the scan (--strict)" in strict.output


def test_a_folder_name_that_is_not_utf8_is_skipped_once(image_dir, cli, db):
    folder = os.path.join(os.fsencode(str(image_dir)), b"dir\xfe")
    os.mkdir(folder)
    for i in range(2):
        make_image(Path(os.fsdecode(folder)) / f"in{i}.png", seed=300 + i)
    r = cli("ingest", image_dir, "--space", "pixels")
    assert r.exit_code == 0, r.output
    assert "added 10" in r.output and "skipped 1" in r.output
    assert "dir\\xfe: folder name is not valid UTF-8: rename it" in r.output
    inside = cli("ingest", os.fsdecode(folder), "--space", "pixels")
    assert inside.exit_code == 1 and "Traceback" not in inside.output
    assert "dir\\xfe is not valid UTF-8: rename it" in inside.output


# ---- 9. links leaving the folder -----------------------------------------------------------


def test_links_leaving_the_folder_are_skipped_unless_follow_links(image_dir, tmp_path, cli, db):
    outside = tmp_path / "outside"
    make_image(outside / "o1.png", seed=500)
    make_image(outside / "sub" / "o2.png", seed=501)
    links = image_dir / "unlabeled"
    os.symlink(outside / "o1.png", links / "file_link.png")
    os.symlink(outside / "sub", links / "dir_link")
    os.symlink(image_dir / "labeled" / "normal" / "n0.png", links / "inside_link.png")
    r = cli("ingest", image_dir, "--space", "pixels")
    assert r.exit_code == 0, r.output
    assert "added 10" in r.output and "skipped 2" in r.output
    for name in ("file_link.png", "dir_link"):
        assert f"{links / name}: link leaves DIR" in r.output
    assert r.output.count("--follow-links to ingest it") == 2
    names = ok_names(db)
    assert "inside_link.png" in names  # a link within the folder works as before
    assert not names & {"o1.png", "o2.png", "file_link.png"}
    assert db("SELECT COUNT(*) FROM image_paths WHERE path LIKE ?", f"{outside}%") == [(0,)]
    follow = cli("ingest", image_dir, "--space", "pixels", "--follow-links")
    assert follow.exit_code == 0, follow.output
    assert "added 2" in follow.output and "skipped" not in follow.output
    assert {"file_link.png", "o2.png"} <= ok_names(db)


# ---- 10. FIFOs and devices where an image is expected --------------------------------------


@pytest.fixture
def pixels_store(image_dir, cli, store_path):
    r = cli("ingest", image_dir, "--space", "pixels")
    assert r.exit_code == 0, r.output
    return store_path


def test_query_of_a_device_ends_quickly_with_a_message(pixels_store, tmp_path):
    t0 = time.perf_counter()
    r = run_cli(pixels_store, "query", "/dev/zero", "--space", "pixels", cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "/dev/zero" in r.stderr and "not a regular file" in r.stderr
    assert "Traceback" not in r.stderr
    assert time.perf_counter() - t0 < 30


def test_query_of_a_fifo_ends_quickly_with_a_message(pixels_store, tmp_path):
    fifo = tmp_path / "q.png"
    os.mkfifo(fifo)  # no writer ever: a blocking open would hang until the timeout
    r = run_cli(pixels_store, "query", str(fifo), "--space", "pixels", cwd=tmp_path, timeout=30)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "q.png" in r.stderr and "not a regular file (a FIFO)" in r.stderr


def test_a_fifo_in_the_folder_is_a_failed_file_and_the_rest_is_stored(image_dir, cli, db):
    with released_fifo(image_dir / "unlabeled" / "pipe.png"):
        t0 = time.perf_counter()
        r = cli("ingest", image_dir, "--space", "pixels")
        assert time.perf_counter() - t0 < QUICK_S + 5
    assert r.exit_code == 0, r.output
    assert "added 10" in r.output
    assert "pipe.png: not a regular file" in r.output


def test_a_file_replaced_by_a_fifo_after_the_scan_is_not_opened(tmp_path):
    from vecstore.ingest.decode import read_and_decode

    path = tmp_path / "was_a_file.png"
    found = scan.Found(str(path), size=100, mtime_ns=1)  # what the scan saw before
    with released_fifo(path):
        t0 = time.perf_counter()
        (res,) = read_and_decode(found)  # the default limits
        assert time.perf_counter() - t0 < QUICK_S
    assert res.error == "not a regular file (a FIFO): vecstore reads only image files"


def test_a_thumbnail_of_a_fifo_is_none_at_once(tmp_path):
    with released_fifo(tmp_path / "t.png") as fifo:
        t0 = time.perf_counter()
        assert thumbnail(str(fifo)) is None
        assert time.perf_counter() - t0 < QUICK_S


def test_labels_set_on_a_fifo_ends_quickly_with_a_message(pixels_store, tmp_path):
    fifo = tmp_path / "l.png"
    os.mkfifo(fifo)
    r = run_cli(pixels_store, "labels", "set", str(fifo), "normal", cwd=tmp_path, timeout=30)
    assert r.returncode == 1 and "not a regular file" in r.stderr, r.stdout + r.stderr


# ---- 11. decompression bombs, huge files, memory errors ------------------------------------


def png_declaring(width: int, height: int) -> bytes:
    """A PNG of a few dozen bytes whose header declares a 1-bit width x height image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * ((width + 7) // 8 + 1))  # one row of the image
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_a_decompression_bomb_is_not_decoded_and_the_rest_is_stored(image_dir, cli, db):
    bomb = image_dir / "unlabeled" / "bomb.png"
    Image.new("1", (13000, 13000)).save(bomb, optimize=True)
    assert bomb.stat().st_size < 100_000  # small on disk, 169 M pixels decoded
    (image_dir / "unlabeled" / "header.png").write_bytes(png_declaring(40000, 40000))
    r = cli("ingest", image_dir, "--space", "pixels")
    assert r.exit_code == 0, r.output
    assert "added 10" in r.output and "failed 2" in r.output
    info = cli("info", "--failed")
    assert info.exit_code == 0, info.output
    line = next(x for x in info.output.splitlines() if "bomb.png" in x)
    assert "13000x13000" in line and "over the limit of 100000000 pixels" in line
    assert "--max-pixels" in line
    line = next(x for x in info.output.splitlines() if "header.png" in x)
    assert "over the limit of 100000000 pixels (--max-pixels)" in line  # Pillow's own check
    assert not ok_names(db) & {"bomb.png", "header.png"}


def test_max_pixels_is_an_ingest_option(image_dir, cli, db):
    make_image(image_dir / "unlabeled" / "small.png", seed=9, size=16)
    r = cli("ingest", image_dir, "--space", "pixels", "--max-pixels", "500")
    assert r.exit_code == 0, r.output
    assert "added 1," in r.output and "failed 10" in r.output
    assert ok_names(db) == {"small.png"}
    assert "32x32 = 1024 pixels, over the limit of 500 pixels (--max-pixels)" in r.output
    bad = cli("ingest", image_dir, "--space", "pixels", "--max-pixels", "0")
    assert bad.exit_code == 2 and "Traceback" not in bad.output


def test_a_file_over_max_file_size_is_refused_unread(image_dir, cli, db):
    rng = np.random.default_rng(0)
    noisy = image_dir / "unlabeled" / "noisy.png"
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8), "L").save(noisy)
    assert noisy.stat().st_size > 4096
    huge = image_dir / "unlabeled" / "huge.png"
    with open(huge, "wb") as f:
        f.truncate(3 * 2**30)  # sparse: 3 GiB that no one should read whole
    r = cli("ingest", image_dir, "--space", "pixels", "--max-file-size", "4K")
    assert r.exit_code == 0, r.output
    assert "added 10" in r.output and "failed 2" in r.output
    assert "noisy.png: file of " in r.output
    assert r.output.count("is over the size limit of 4.0 KiB (--max-file-size)") == 2
    assert "huge.png: file of 3.0 GiB (3221225472 bytes) is over the size limit" in r.output
    bad = cli("ingest", image_dir, "--space", "pixels", "--max-file-size", "lots")
    assert bad.exit_code == 2 and "cannot read 'lots' as a size" in bad.output


def test_a_huge_file_is_refused_at_the_default_limit_without_reading_it(image_dir, cli):
    with open(image_dir / "unlabeled" / "huge.png", "wb") as f:
        f.truncate(2**30 + 1)  # sparse, one byte over the default 1 GiB
    t0 = time.perf_counter()
    r = cli("ingest", image_dir, "--space", "pixels")
    assert r.exit_code == 0, r.output
    want = "huge.png: file of 1.0 GiB (1073741825 bytes) is over the size limit of 1.0 GiB"
    assert want in r.output
    assert time.perf_counter() - t0 < 20


def _memory_error_on_17px(img: Image.Image) -> np.ndarray:
    if img.size == (17, 17):
        raise MemoryError()
    return pixel_features(img)


def test_a_memory_error_on_one_file_never_ends_the_embed(image_dir, cli, db, monkeypatch):
    make_image(image_dir / "unlabeled" / "odd.png", seed=11, size=17)
    r = cli("ingest", image_dir, "--space", "histogram")
    assert r.exit_code == 0, r.output
    monkeypatch.setitem(CLASSIC, "pixels", (_memory_error_on_17px, CLASSIC["pixels"][1]))
    r = cli("embed", "--space", "pixels")
    assert r.exit_code == 0, r.output
    assert "embedded 10, failed 1" in r.output
    [(reason,)] = db("SELECT reason FROM embed_failures")
    assert reason.startswith("out of memory")


def test_a_memory_error_on_one_file_never_ends_the_ingest(image_dir, cli, db, monkeypatch):
    make_image(image_dir / "unlabeled" / "odd.png", seed=11, size=17)
    monkeypatch.setitem(CLASSIC, "pixels", (_memory_error_on_17px, CLASSIC["pixels"][1]))
    r = cli("ingest", image_dir, "--space", "pixels")
    assert r.exit_code == 0, r.output
    assert "added 10" in r.output and "failed 1" in r.output
    assert "odd.png: out of memory" in r.output


# ---- 12. EXIF orientation ------------------------------------------------------------------


def _save_with_orientation(upright: Image.Image, path: Path, orientation: int) -> None:
    """Pixels stored turned, with the EXIF tag that turns them back upright on display."""
    turn = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    upright.transpose(turn).save(path, exif=exif)


def test_exif_orientation_is_applied_to_vectors_sizes_and_thumbnails(tmp_path, cli, db):
    root = tmp_path / "exif"
    upright_path = make_image(root / "upright.png", seed=3, size=40)
    upright = Image.open(upright_path).crop((0, 0, 40, 24))  # not square: 40 wide, 24 high
    upright.save(upright_path)
    _save_with_orientation(upright, root / "rot6.png", 6)
    _save_with_orientation(upright, root / "rot8.png", 8)
    assert Image.open(root / "rot6.png").size == (24, 40)  # as stored
    r = cli("ingest", root, "--space", "pixels")
    assert r.exit_code == 0, r.output
    assert "added 3" in r.output
    sizes = db(
        "SELECT p.path, i.width, i.height FROM images i JOIN image_paths p ON p.image_id=i.id"
    )
    assert {(w, h) for _, w, h in sizes} == {(40, 24)}
    want = vector_of(db, "upright.png")
    for name in ("rot6.png", "rot8.png"):
        np.testing.assert_allclose(vector_of(db, name), want, atol=1e-6)
    thumbs = {n: thumbnail(str(root / n)) for n in ("upright.png", "rot6.png", "rot8.png")}
    shapes = {
        Image.open(io.BytesIO(base64.b64decode(t.split(",", 1)[1]))).size for t in thumbs.values()
    }
    assert shapes == {(40, 24)}


# ---- 13. unreadable folders ----------------------------------------------------------------


@contextlib.contextmanager
def unreadable(folder: Path, monkeypatch):
    """``folder`` cannot be listed: chmod 000, or (as root, who reads it anyway) os.scandir
    refusing it as the kernel would refuse another user."""
    if os.geteuid() != 0:
        folder.chmod(0)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    real = os.scandir

    def scandir(path=".", *a):
        if os.path.abspath(os.fsdecode(path)) == str(folder):
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real(path, *a)

    monkeypatch.setattr(scan.os, "scandir", scandir)
    yield


def test_an_unreadable_folder_is_reported_and_fails_strict(image_dir, cli, db, monkeypatch):
    blocked = image_dir / "labeled" / "cancer"
    with unreadable(blocked, monkeypatch):
        r = cli("ingest", image_dir, "--space", "pixels")
        strict = cli("ingest", image_dir, "--space", "pixels", "--strict")
    assert r.exit_code == 0, r.output
    assert "added 7" in r.output and "skipped 1" in r.output
    assert f"{blocked}: cannot read folder: Permission denied" in r.output
    assert strict.exit_code == 1
    assert "cannot read folder" in strict.output
    assert "1 skipped by the scan (--strict)" in strict.output
