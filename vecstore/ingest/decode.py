"""Reading the files of a scan: each file read once (in chunks, within the file limits) for
its content hash, a full decode that validates it, and the descriptor features of the spaces
that need no CNN, in worker processes (decoding and descriptors hold the GIL in threads)."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .. import dicom
from ..embedders.prepare import Prepared
from ..errors import EmbedError
from ..imagefile import DEFAULT_LIMITS, OUT_OF_MEMORY, decode_image, read_image_file
from ..params import FileLimits
from .scan import Found

POOL_MIN_FILES = 64  # under this, the files are read in the calling process


@dataclass
class Decoded:
    """What reading one file gave: its hash and image facts, or the error that stopped it."""

    found: Found
    sha256: str | None = None
    error: str | None = None
    size: int | None = None
    width: int | None = None
    height: int | None = None
    mode: str | None = None
    pixels_sha256: str | None = None  # of the decoded pixels: a re-save changes bytes, not this
    features: dict[str, Any] = field(default_factory=dict)  # space -> descriptor vector
    metadata: dict[str, Any] = field(default_factory=dict)  # what the file says (DICOM tags)
    cnn_input: Prepared | None = None  # for the CNN spaces, from this same decode


def read_and_decode(
    found: Found,
    features: dict[str, Callable] | None = None,
    limits: FileLimits = DEFAULT_LIMITS,
    frames: str = "middle",
    prepare: Callable[[Any], Prepared] | None = None,
) -> list[Decoded]:
    """Read a file once, in chunks, within ``limits``: content hash, a full decode (upright)
    that validates it, the features of ``features`` (space name -> function of the decoded
    image) and with ``prepare`` (a function of it too) the CNN spaces' input, so that a new
    file is decoded once. Whatever goes wrong is this file's error, never the run's. One
    Decoded, or with ``frames`` "all" one per frame of a multi-frame DICOM file (its path
    vecstore.dicom.frame_path)."""
    out = Decoded(found, error=found.error)
    if found.error:
        return [out]
    try:
        data, out.sha256 = read_image_file(found.path, limits)
    except EmbedError as exc:
        out.error = str(exc)
        return [out]
    except MemoryError:
        out.error = OUT_OF_MEMORY
        return [out]
    out.size = len(data)
    if not data:
        out.error = "empty file (0 bytes)"
        return [out]
    make = _Make(features or {}, prepare)
    if frames == "all" and dicom.is_dicom(data, found.path):
        return _each_frame(out, data, make, limits)
    out.error = _decode(out, data, make, limits)
    return [out]


@dataclass
class _Make:
    """What is made from a decoded image: descriptor features, and maybe the CNN input."""

    features: dict[str, Callable]
    prepare: Callable[[Any], Prepared] | None


def _decode(out: Decoded, data: bytes, make: _Make, limits: FileLimits) -> str | None:
    """Fill ``out`` with the image facts and features; the error, or None. A DICOM file's
    content hash is its pixel data's, and its tags are its metadata (vecstore.dicom)."""
    try:
        if dicom.is_dicom(data, out.found.path):
            dcm = dicom.decode_dicom(data, limits.max_pixels)
            img, out.sha256, out.metadata = dcm.image, dcm.content_sha256, dcm.tags
        else:
            img = decode_image(data, limits)
        _facts(out, img, make)
    except Exception as exc:  # see _why
        return _why(exc)
    return None


def _each_frame(first: Decoded, data: bytes, make: _Make, limits: FileLimits) -> list[Decoded]:
    """One Decoded per frame of a DICOM file (a single-frame file: one, under its path);
    a file that cannot be decoded: one, with the error."""
    out: list[Decoded] = []
    try:
        for dcm in dicom.iter_frames(data, limits.max_pixels):
            f = first.found
            path = dicom.frame_path(f.path, dcm.frame + 1) if dcm.frames > 1 else f.path
            res = Decoded(Found(path, f.size, f.mtime_ns), dcm.content_sha256, size=first.size)
            res.metadata = dcm.tags
            _facts(res, dcm.image, make)
            out.append(res)
    except Exception as exc:  # see _why
        first.error = _why(exc)
        return [first]
    return out


def _facts(out: Decoded, img, make: _Make) -> None:
    """The decoded image's size, mode and pixel hash, its descriptor features and CNN input."""
    out.width, out.height, out.mode = img.width, img.height, img.mode
    out.pixels_sha256 = pixels_sha256(img)
    for name, fn in make.features.items():
        out.features[name] = fn(img)
    if make.prepare is not None:
        out.cnn_input = make.prepare(img)


def _why(exc: Exception) -> str:
    """A file's error: why it cannot be decoded (EmbedError), memory, or a descriptor failing
    on odd content (which must not stop the run)."""
    if isinstance(exc, MemoryError):
        return OUT_OF_MEMORY
    if isinstance(exc, EmbedError):
        return str(exc)
    return f"cannot compute features: {type(exc).__name__}: {exc}"


def pixels_sha256(img) -> str:
    """sha256 of a decoded image's mode, size and pixel bytes."""
    h = hashlib.sha256(f"{img.mode} {img.width}x{img.height}\n".encode())
    h.update(img.tobytes())
    return h.hexdigest()


def _die_with_parent() -> None:
    """Pool initializer: a worker gets SIGKILL when its parent dies (Linux), so a killed
    ingest leaves no orphan processes behind."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: workers end when their queue closes
        pass


class InlineExecutor(Executor):
    """map() in the calling thread: for a handful of files a pool costs more than it saves."""

    def map(self, fn, *iterables, timeout=None, chunksize=1):
        return map(fn, *iterables)


def scan_pool(n_files: int, workers: int | None = None) -> Executor:
    """Processes for hashing, decoding, descriptors and CNN inputs: ``workers`` of them
    (None: one per core, up to 8; 0: none, all in the calling process, as for a handful of
    files, where a pool costs more than it saves). fork is what torch's DataLoader uses too;
    children never touch torch."""
    workers = min(os.cpu_count() or 1, 8) if workers is None else workers
    if n_files < POOL_MIN_FILES or workers < 1:
        return InlineExecutor()
    try:
        fork = multiprocessing.get_context("fork")
        return ProcessPoolExecutor(workers, mp_context=fork, initializer=_die_with_parent)
    except (OSError, ValueError):  # no fork on this platform or no process slots
        return ThreadPoolExecutor(workers)
