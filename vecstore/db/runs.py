"""The run log: every ingest, embed, clustering, propagation, evaluation and learning curve is
a run with its kind, space, parameters, results, times, status (running, done, failed, or
interrupted when its process died) and vecstore version.

>>> with db.runs.record("cluster", "pixels", {"k": 10}) as run:   # doctest: +SKIP
...     run.stats = {"sizes": [...]}                                # marked done on exit
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from .. import __version__
from ..errors import NoRun
from .models import Run

if TYPE_CHECKING:  # pragma: no cover
    from .connections import Connections

RUNNING, INTERRUPTED = "running", "interrupted"  # statuses besides done and failed
SUGGEST, PICKED = "suggest", "picked"  # a `vecstore suggest` run; its stats' list of image ids


@dataclass
class RunHandle:
    """The run being recorded: set ``stats`` before the block ends."""

    id: int
    stats: dict[str, Any] = field(default_factory=dict)


class RunRepo:
    def __init__(self, db: Connections) -> None:
        self.db = db

    def start(self, kind: str, space: str | None, params: dict[str, Any]) -> int:
        with self.db.session() as s:
            run = Run(kind=kind, space=space, params=params, stats={}, code_version=__version__)
            s.add(run)
            s.commit()
            return run.id

    def finish(self, run_id: int, stats: dict[str, Any], status: str = "done") -> None:
        with self.db.session() as s:
            run = s.get(Run, run_id)
            assert run is not None
            run.stats, run.status = stats, status
            run.finished_at = datetime.now(timezone.utc)
            started = run.started_at
            if started.tzinfo is None:  # SQLite gives datetimes back without a zone
                started = started.replace(tzinfo=timezone.utc)
            run.seconds = (run.finished_at - started).total_seconds()
            s.commit()

    @contextmanager
    def record(
        self,
        kind: str,
        space: str | None,
        params: dict[str, Any],
        partial: Callable[[], dict[str, Any]] | None = None,
    ) -> Iterator[RunHandle]:
        """A run marked done with ``handle.stats`` when the block ends, or failed (with the
        error, and ``partial()`` when given: what was done before it) when it raises."""
        run = RunHandle(self.start(kind, space, params))
        try:
            yield run
        except BaseException as exc:
            self.finish(run.id, {**_so_far(partial), "error": repr(exc)}, status="failed")
            raise
        self.finish(run.id, run.stats)

    def mark_interrupted(self) -> int:
        """Mark every run still ``running`` as ``interrupted``: called by the one writer as it
        opens the store, when no other process can be running one (a killed process leaves
        its run marked running). Returns how many."""
        now = datetime.now(timezone.utc)
        note = (
            "the process ended before the run finished (killed?): found running when a "
            f"writer opened the store at {now.isoformat(timespec='seconds')}"
        )
        with self.db.session() as s:
            stale = list(s.scalars(select(Run).where(Run.status == RUNNING)))
            for run in stale:
                run.status, run.stats = INTERRUPTED, {**(run.stats or {}), "interrupted": note}
            s.commit()
        return len(stale)

    def count_interrupted(self) -> int:
        with self.db.session() as s:
            q = select(func.count()).select_from(Run).where(Run.status == INTERRUPTED)
            return s.scalar(q) or 0

    def latest(self, kind: str, space: str | None = None) -> Run | None:
        """The latest finished run of a kind (of a space, when given)."""
        q = select(Run).where(Run.kind == kind, Run.status == "done")
        if space is not None:
            q = q.where(Run.space == space)
        with self.db.session() as s:
            return s.scalar(q.order_by(Run.id.desc()).limit(1))

    def done_after(self, run_id: int | None) -> list[Run]:
        """The finished runs with an id above ``run_id`` (every one for None), oldest first."""
        q = select(Run).where(Run.status == "done", Run.id > (run_id or 0))
        with self.db.session() as s:
            return list(s.scalars(q.order_by(Run.id)))

    def picked(self) -> set[int]:
        """Every image a finished ``suggest`` run picked (its stats' ``picked`` ids)."""
        q = select(Run.stats).where(Run.kind == SUGGEST, Run.status == "done")
        with self.db.session() as s:
            return {int(i) for stats in s.scalars(q) for i in (stats or {}).get(PICKED, ())}

    def get(self, run_id: int, kind: str) -> Run:
        """Run ``run_id``, which must be of ``kind``."""
        with self.db.session() as s:
            run = s.get(Run, run_id)
        if run is None or run.kind != kind:
            raise NoRun(f"run {run_id} is not a {kind} run of this store (see `vecstore runs`)")
        return run

    def all(self) -> list[Run]:
        with self.db.session() as s:
            return list(s.scalars(select(Run).order_by(Run.id)))


def _so_far(partial: Callable[[], dict[str, Any]] | None) -> dict[str, Any]:
    """What a failed run had done, as ``partial()`` tells; its own failure is recorded too
    rather than hiding the run's error or leaving the run marked running."""
    if partial is None:
        return {}
    try:
        return partial()
    except Exception as exc:
        return {"partial_error": repr(exc)}
