"""Reading the files of a scan: each file read once for its content hash, a full decode that
validates it, and the descriptor features of the spaces that need no CNN, in worker
processes (decoding and descriptors hold the GIL in threads)."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..embedders import open_image
from ..errors import EmbedError
from ..files import sha256_bytes
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
    features: dict[str, Any] = field(default_factory=dict)  # space -> descriptor vector


def read_and_decode(found: Found, features: dict[str, Callable] | None = None) -> Decoded:
    """Read a file once: content hash, a full decode to validate it, and the descriptor
    features of ``features`` (space name -> function of the decoded image)."""
    out = Decoded(found, error=found.error)
    if found.error:
        return out
    try:
        with open(found.path, "rb") as f:
            data = f.read()
    except OSError as exc:
        out.error = f"cannot read file: {exc.strerror or exc}"
        return out
    out.sha256, out.size = sha256_bytes(data), len(data)
    if not data:
        out.error = "empty file (0 bytes)"
        return out
    try:
        img = open_image(data)
        out.width, out.height, out.mode = img.width, img.height, img.mode
        for name, fn in (features or {}).items():
            out.features[name] = fn(img)
    except EmbedError as exc:
        out.error = str(exc)
    except Exception as exc:  # a descriptor failing on odd content must not stop the run
        out.error = f"cannot compute features: {type(exc).__name__}: {exc}"
    return out


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


def scan_pool(n_files: int) -> Executor:
    """Processes for hashing, decoding and descriptors. fork is what torch's DataLoader uses
    too; children never touch torch."""
    workers = min(os.cpu_count() or 1, 8)
    if n_files < POOL_MIN_FILES or workers < 2:
        return InlineExecutor()
    try:
        fork = multiprocessing.get_context("fork")
        return ProcessPoolExecutor(workers, mp_context=fork, initializer=_die_with_parent)
    except (OSError, ValueError):  # no fork on this platform or no process slots
        return ThreadPoolExecutor(workers)
