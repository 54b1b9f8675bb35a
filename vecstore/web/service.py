"""What the web layer holds between requests: one store open to read, the review table of
its current data version (rebuilt when another process writes), writes that take the
one-writer lock only for their own duration (``busy`` when another writer holds it), and the
background jobs (propagate, evaluate, cluster) with their state."""

from __future__ import annotations

import getpass
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..browse import ReviewTable, with_expert_labels
from ..errors import StoreLocked, VecstoreError
from ..params import ClusterParams, EvaluationParams
from ..store import Store
from .options import ServeOptions


class Busy(VecstoreError):
    """Another process holds the write lock: the write is refused, nothing changed."""

    def __init__(self, locked: StoreLocked) -> None:
        doing = locked.purpose or "another writer"
        pid = f" (pid {locked.holder})" if locked.holder else ""
        super().__init__(f"busy: {doing} running{pid}; nothing was written, try again when it ends")


@dataclass
class Job:
    id: int
    kind: str
    space: str | None
    state: str = "running"  # running | done | failed
    started: float = field(default_factory=time.time)
    ended: float | None = None
    message: str = ""
    result: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        end = self.ended or time.time()
        return {
            "id": self.id,
            "kind": self.kind,
            "space": self.space,
            "state": self.state,
            "started": datetime.fromtimestamp(self.started, timezone.utc).isoformat(
                timespec="seconds"
            ),
            "seconds": round(end - self.started, 2),
            "message": self.message,
            "result": self.result,
        }


JOB_KINDS = ("propagate", "evaluate", "cluster")
SLOW_TABLE_S = 0.5  # a review table built slower than this is rebuilt in the background
SLOW_TABLE_SHARE = 0.1  # and such builds take at most this share of the time
PENDING = object()  # the held table stands until a write of this process is noted
GROW = object()  # images were added since the held table was read: append them


class ReviewService:
    """The store as the web layer sees it. Reads share one open store (its index cache
    safe for many threads, the review table rebuilt when the data moved); each write takes
    the store's write lock for itself."""

    def __init__(self, path: str | Path, options: ServeOptions) -> None:
        self.path = Path(path)
        self.options = options
        self.store = Store.open(self.path)
        Store.set_search_threads(options.search_threads)
        self._rebuild = threading.Lock()  # one review table built at a time
        self._growing = threading.Lock()  # images added appended by one thread at a time
        self._mark_at: tuple[int, tuple] | None = None  # see _mark
        self._cannot_grow: object = None  # the df of a table more than images changed since
        self._slow = False  # the last build took over SLOW_TABLE_S: build in the background
        # this server's writes committed, and how many of them the held table is known to
        # show: an answer never leaves one out (the reviewer who wrote sees it), so a table
        # behind them is rebuilt before the answer, even when builds run in the background
        self._writes = 0
        self._shown = 0
        self._next_build = 0.0  # and not again before this (monotonic time)
        self._patching = threading.Lock()  # the held table and the own writes noted
        self._own: dict[int, tuple[int, str]] = {}  # label batch -> (image, label), written here
        self._write = threading.Lock()
        self._table: ReviewTable | None = None
        self._reviewer = options.reviewer or os.environ.get("VECSTORE_USER") or _login()
        self._jobs: dict[int, Job] = {}
        self._job_ids = itertools.count(1)

    def close(self) -> None:
        self.store.close()

    # ---- reads ---------------------------------------------------------------------------------
    def table(self) -> ReviewTable:
        """The review table at the store's current data version: the one held when nothing
        it shows changed, or brought forward by the labels this process wrote, else
        rebuilt. One rebuild at a time: while one runs, other requests get the table before
        it; and once a build has taken more than SLOW_TABLE_S (a large store), every
        rebuild runs in the background, requests keeping the previous table meanwhile, and
        at most SLOW_TABLE_SHARE of the time (a CLI ingest beside the server commits often).
        Images added since (an ingest) are appended the same way, by one thread at a time."""
        writes = self._writes  # read before the data: the answer shows these writes
        held, now = self._table, self.store.data_version()
        if held is not None and held.version == now:
            return held
        with self._patching:
            moved = self._forward()
        if moved is GROW:
            moved = self._grow()
        if moved is PENDING:
            return held  # a label being written here: noted when it lands
        if moved:
            assert self._table is not None
            if self._table.version == now:  # brought to data read after the writes
                self._shown = max(self._shown, writes)
            return self._table
        behind = self._shown < writes  # a write of this server no overlay could show
        if held is not None and self._slow and not behind:
            if time.monotonic() < self._next_build:
                return held  # a slow build ended lately: at most SLOW_TABLE_SHARE of the time
            if self._rebuild.acquire(blocking=False):
                threading.Thread(
                    target=self._rebuild_then_release, args=(writes,), daemon=True
                ).start()
            return held
        if self._rebuild.acquire(blocking=held is None or behind):
            self._rebuild_then_release(writes)
        assert self._table is not None
        return self._table

    def _forward(self) -> bool | object:
        """Bring the held table up to the current data version without a rebuild when it
        can be told what changed: nothing the table shows (the data version moves with any
        commit), images added (a CLI ingest), label batches this process wrote. True when it
        did; GROW when it did but for images added (see _grow); PENDING when a label batch it
        does not know may be one a write of this process has committed but not noted yet
        (the write still holds ``_write``): the held table stands meanwhile."""
        table, now = self._table, self.store.data_version()
        if table is None:
            return False
        mark = self._mark(now)
        whole = mark[1:] == table.mark[1:]
        if not whole:
            if table.df is self._cannot_grow:
                return False  # a run, an image gone: more than images added
            mark = (mark[0], *table.mark[1:])  # the labels now, the images when appended
        if mark == table.mark:
            self._table = replace(table, version=now) if whole else table
            return True if whole else GROW
        if table.mark[0] is None:
            return False
        labels = {}
        for batch in range(table.mark[0] + 1, (mark[0] or 0) + 1):
            if batch not in self._own:  # from elsewhere (another process, an undo) ...
                return PENDING if self._write.locked() else False  # ... or not noted yet
            image_id, label = self._own[batch]
            labels[image_id] = label
        moved = with_expert_labels(table, labels, now if whole else table.version, mark)
        if moved is None:
            return False
        self._table = moved
        self._own = {b: w for b, w in self._own.items() if b > (mark[0] or 0)}
        return True if whole else GROW

    def _mark(self, version: int) -> tuple:
        """The review mark (Store.review_mark: a count of the images among others) read
        once per data version, not by every request that finds the version moved."""
        known = self._mark_at
        if known is not None and known[0] == version:
            return known[1]
        mark = self.store.review_mark()  # read after the version: as new as it, or newer
        self._mark_at = (version, mark)
        return mark

    def _grow(self) -> bool | object:
        """Images were added since the held table was read: one thread appends them, in the
        background once builds are slow; meanwhile requests get the held table (with the
        labels written here). What ``_forward`` answers after it, or True meanwhile."""
        if not self._growing.acquire(blocking=False):
            return True
        if self._slow:
            threading.Thread(target=self._grow_then_release, daemon=True).start()
            return True
        self._grow_then_release()
        with self._patching:
            moved = self._forward()
        return True if moved is GROW else moved

    def _grow_then_release(self) -> None:
        """Append to the held table the images added since it was read (the caller holds
        ``_growing``, released here), outside ``_patching``: requests meanwhile get the held
        table, with the labels written here. Nothing appended when more than images changed
        (the table is rebuilt then)."""
        try:
            table = self._table
            mark = self._mark(self.store.data_version())
            if table is None or mark[1:] == table.mark[1:]:
                return
            grown = self.store.with_new_images(table, mark)
            if grown is None:
                self._cannot_grow = table.df  # until a rebuild gives another
                return
            with self._patching:
                now = self._table
                if now is not None and now.df is table.df:  # not rebuilt meanwhile
                    self._table = replace(
                        now,
                        df=grown.df,
                        rows=grown.rows,
                        by_id=grown.by_id,
                        metadata=grown.metadata,
                        mark=(now.mark[0], *grown.mark[1:]),
                        _frame=None,
                    )
        finally:
            self._growing.release()

    def _rebuild_then_release(self, writes: int) -> None:
        """Build the review table (the caller holds ``_rebuild``, released here), then bring
        it forward by the labels written here while it was built. It reads the data after
        this server's first ``writes`` writes: it shows them."""
        try:
            if self._table is None or self._table.version != self.store.data_version():
                t0 = time.perf_counter()
                table = self.store.review_table()
                with self._patching:
                    self._table = table
                    self._forward()
                took = time.perf_counter() - t0
                self._slow = took > SLOW_TABLE_S
                pause = took * (1 / SLOW_TABLE_SHARE - 1)
                self._next_build = time.monotonic() + pause if self._slow else 0.0
            self._shown = max(self._shown, writes)  # built, or found at data read after them
        finally:
            self._rebuild.release()

    # ---- writes --------------------------------------------------------------------------------
    @contextmanager
    def writing(self, purpose: str) -> Iterator[Store]:
        """The store made a writer for one request (Busy when another process writes)."""
        with self._write:
            try:
                with self.store.writing(purpose=f"serve: {purpose}") as store:
                    yield store
            except StoreLocked as exc:
                raise Busy(exc) from None
            self._writes += 1

    def set_label(self, image_id: int, label: str, **how: Any) -> Any:
        """Set an expert label, and note its label batch as this process's own, so that
        the review table is brought forward by it instead of rebuilt from the database."""
        with self.writing("label") as store:
            change = store.set_label(str(image_id), label, replace=True, **how)
            if change.batch is not None:
                with self._patching:
                    self._own[change.batch] = (image_id, change.label)
        return change

    def reviewer(self, named: str | None) -> str:
        """The name a request gives (X-Reviewer), else the service's."""
        name = (named or "").strip()
        return name[:128] if name else self._reviewer

    # ---- jobs ----------------------------------------------------------------------------------
    def start_job(self, kind: str, space: str | None) -> Job:
        """Start a propagate / evaluate / cluster run in the background, with a store of its
        own opened to write now (Busy when another writer runs)."""
        if kind not in JOB_KINDS:
            raise VecstoreError(f"a job is one of {', '.join(JOB_KINDS)}, not {kind!r}")
        try:
            store = Store.open(self.path, write=True, purpose=f"serve: {kind}")
        except StoreLocked as exc:
            raise Busy(exc) from None
        job = Job(next(self._job_ids), kind, space)
        self._jobs[job.id] = job
        work = self._work(kind, space, store)
        threading.Thread(target=self._run, args=(job, store, work), daemon=True).start()
        return job

    def _work(self, kind: str, space: str | None, store: Store) -> Callable[[], Any]:
        if kind == "propagate":
            return lambda: store.propagate(space, store.propagation_params(space))
        if kind == "cluster":
            return lambda: store.cluster(space, ClusterParams())
        positive = self.table().positive
        return lambda: store.evaluate(space, EvaluationParams(positive=positive))

    def _run(self, job: Job, store: Store, work: Callable[[], Any]) -> None:
        """Run a job's work, then close its store, and only then say it ended: a job read as
        ended has given the write lock back, so the next one can start."""
        result, state, message = None, "failed", ""
        try:
            out = work()
            result = out.to_dict() if hasattr(out, "to_dict") else None
            state, message = "done", f"{job.kind} done"
        except VecstoreError as exc:
            message = str(exc)
        except Exception as exc:  # a job's own failure is reported, the server goes on
            message = f"{type(exc).__name__}: {exc}"
        finally:
            try:
                store.close()
            finally:  # even a close that fails ends the job
                job.result, job.message, job.ended = result, message, time.time()
                job.state = state  # last: what a poll reads as "ended" is whole

    def jobs(self) -> list[Job]:
        return sorted(self._jobs.values(), key=lambda j: -j.id)

    def job(self, job_id: int) -> Job | None:
        return self._jobs.get(job_id)


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container, say)
        return "reviewer"
