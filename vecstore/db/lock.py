"""The one-writer lock of a store: an flock on ``<store>/write.lock`` that holds the writer's
pid, dropped by the kernel when the process dies (even by SIGKILL), and never inherited by
forked workers."""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

from ..errors import StoreLocked, StoreReadOnly

# Lock file descriptors held by this process. A forked child (scan workers, DataLoader
# workers) must not keep them: flock belongs to the open file, so a child that outlives a
# killed parent would keep the store locked.
_HELD_LOCK_FDS: set[int] = set()


def _close_lock_fds_in_child() -> None:
    for fd in list(_HELD_LOCK_FDS):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD_LOCK_FDS.clear()


os.register_at_fork(after_in_child=_close_lock_fds_in_child)


LOCK_POLL_S = 0.05  # how often a writer told to wait tries the lock again


class WriteLock:
    """``acquire()`` takes the lock or raises StoreLocked naming the holder's pid and what
    it is doing (``purpose``, written beside its pid: "ingest", "serve: label", ...)."""

    def __init__(self, store_path: Path) -> None:
        self.store_path = store_path
        self.path = store_path / "write.lock"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, *, wait: float = 0.0, purpose: str = "") -> None:
        """Raises StoreLocked when another process writes (still, after trying for ``wait``
        seconds), StoreReadOnly when this user cannot write the store."""
        deadline = time.monotonic() + max(0.0, wait)
        while True:
            try:
                return self._try(purpose)
            except StoreLocked:
                if time.monotonic() >= deadline:
                    raise
            time.sleep(LOCK_POLL_S)

    def _try(self, purpose: str) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise StoreReadOnly(str(self.store_path), exc.strerror or str(exc)) from None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held = os.pread(fd, 256, 0).decode(errors="replace").strip().split(" ", 1)
            os.close(fd)
            pid, doing = (held + [""])[:2] if held[0] else (None, "")
            raise StoreLocked(str(self.store_path), pid, doing or None) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {purpose}".strip().encode(), 0)
        _HELD_LOCK_FDS.add(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            _HELD_LOCK_FDS.discard(self._fd)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
