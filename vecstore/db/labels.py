"""Expert labels: at most one per image, with where it came from. Pseudo-labels never land
here (they are predictions of a propagation run, vecstore.db.outputs).

Every change goes through ``apply`` (or ``carry``, inside an ingest): one batch row (kind,
who, source) and one event per image with its label before and after, in the same
transaction as the change itself, so that a batch can be shown and undone exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from .connections import in_chunks
from .models import Image, Label, LabelBatch, LabelEvent, utcnow

if TYPE_CHECKING:  # pragma: no cover
    from .connections import Connections


@dataclass(frozen=True)
class Change:
    """An image's new expert label (``label`` None: no label), from ``source``."""

    image_id: int
    label: str | None
    source: str | None = None
    review_reason: str | None = None


@dataclass(frozen=True)
class BatchInfo:
    kind: str  # import | set | remove | folder | carry | undo | review | forget
    who: str
    source: str
    note: str | None = None


@dataclass(frozen=True)
class Carry:
    """A path whose bytes changed: its image ``old`` gives its label to the image ``new``."""

    old: int
    new: int
    path: str
    same_pixels: bool


CHANGED = "content changed since labeled"


class LabelRepo:
    def __init__(self, db: Connections) -> None:
        self.db = db

    # ---- reads ------------------------------------------------------------------------------
    def all(self) -> dict[int, str]:
        """image id -> expert label."""
        with self.db.session() as s:
            return dict(s.execute(select(Label.image_id, Label.label)).all())

    def get(self, image_id: int) -> Label | None:
        with self.db.session() as s:
            return s.scalar(select(Label).where(Label.image_id == image_id))

    def review_reasons(self) -> dict[int, str]:
        """image id -> why its expert label needs a look (content changed since labeled)."""
        q = select(Label.image_id, Label.review_reason).where(Label.review_reason.is_not(None))
        with self.db.session() as s:
            return dict(s.execute(q).all())

    def counts(self) -> list[tuple[str, str, int, int]]:
        """(label, source, count, flagged for review), sorted by label then source."""
        flagged = func.count(Label.review_reason)
        q = (
            select(Label.label, Label.source, func.count(), flagged)
            .group_by(Label.label, Label.source)
            .order_by(Label.label, Label.source)
        )
        with self.db.session() as s:
            return [(lab, src, n, f) for lab, src, n, f in s.execute(q)]

    def batches(self) -> list[tuple[LabelBatch, int]]:
        """Every batch, oldest first, with its number of events."""
        n = select(func.count()).where(LabelEvent.batch_id == LabelBatch.id).scalar_subquery()
        with self.db.session() as s:
            return [(b, c) for b, c in s.execute(select(LabelBatch, n).order_by(LabelBatch.id))]

    def batch(self, batch_id: int) -> LabelBatch | None:
        with self.db.session() as s:
            return s.get(LabelBatch, batch_id)

    def last_undoable(self) -> LabelBatch | None:
        """The latest batch that is neither an undo nor undone."""
        q = select(LabelBatch).where(LabelBatch.kind != "undo", LabelBatch.undone_by.is_(None))
        with self.db.session() as s:
            return s.scalar(q.order_by(LabelBatch.id.desc()).limit(1))

    def events(
        self, *, batch_id: int | None = None, image_ids: Iterable[int] = (), path: str | None = None
    ) -> list[tuple[LabelEvent, LabelBatch]]:
        """The events of a batch, or those of some images or of a path, oldest first."""
        q = select(LabelEvent, LabelBatch).join(LabelBatch, LabelBatch.id == LabelEvent.batch_id)
        if batch_id is not None:
            q = q.where(LabelEvent.batch_id == batch_id)
        else:
            ids = list(image_ids)
            q = q.where(LabelEvent.image_id.in_(ids) | (LabelEvent.path == path))
        with self.db.session() as s:
            return [(e, b) for e, b in s.execute(q.order_by(LabelEvent.id))]

    def later_change(self, image_id: int, after_batch: int) -> int | None:
        """The latest batch after ``after_batch`` that changed this image's label and is not
        undone (the one to undo first)."""
        q = (
            select(func.max(LabelEvent.batch_id))
            .join(LabelBatch, LabelBatch.id == LabelEvent.batch_id)
            .where(
                LabelEvent.image_id == image_id,
                LabelEvent.batch_id > after_batch,
                LabelBatch.undone_by.is_(None),
            )
        )
        with self.db.session() as s:
            return s.scalar(q)

    # ---- writes -----------------------------------------------------------------------------
    def current(self, ids: Sequence[int]) -> dict[int, tuple[str, str, str | None]]:
        """image id -> (label, source, review reason) of the labeled ones among ``ids``."""
        with self.db.session() as s:
            return _current(s, ids)

    def apply(
        self, changes: Sequence[Change], info: BatchInfo, *, undoes: int | None = None
    ) -> int | None:
        """Make the changes one batch, in one transaction; returns its id (None when no
        change changes anything). ``undoes``: the batch this one undoes, marked so in the
        same transaction."""
        with self.db.session() as s:
            # an undo is recorded even when nothing is left to restore (its images are gone):
            # the batch it undoes is then marked undone, and the next undo goes further back
            batch_id = self._apply(s, changes, info, always=undoes is not None)
            if undoes is not None:
                s.execute(
                    update(LabelBatch).where(LabelBatch.id == undoes).values(undone_by=batch_id)
                )
            s.commit()
        return batch_id

    def _apply(
        self, s: Session, changes: Sequence[Change], info: BatchInfo, *, always: bool = False
    ) -> int | None:
        old = _current(s, [c.image_id for c in changes])
        real = [c for c in changes if old.get(c.image_id, (None, None, None)) != _after(c)]
        if not real and not always:
            return None
        batch = LabelBatch(kind=info.kind, who=info.who, source=info.source, note=info.note)
        s.add(batch)
        s.flush()
        paths = _paths(s, [c.image_id for c in real])
        now = utcnow()
        for part in in_chunks([c.image_id for c in real]):
            s.execute(delete(Label).where(Label.image_id.in_(part)))
        labels, events = [], []
        for c in real:
            before = old.get(c.image_id, (None, None, None))
            if c.label is not None:
                labels.append(
                    {
                        "image_id": c.image_id,
                        "label": c.label,
                        "source": c.source,
                        "review_reason": c.review_reason,
                        "batch_id": batch.id,
                        "created_at": now,
                    }
                )
            events.append(
                {
                    "batch_id": batch.id,
                    "image_id": c.image_id,
                    "path": paths.get(c.image_id),
                    "old_label": before[0],
                    "old_source": before[1],
                    "old_review": before[2],
                    "new_label": c.label,
                    "new_source": c.source if c.label is not None else None,
                    "new_review": c.review_reason if c.label is not None else None,
                }
            )
        if labels:
            s.execute(insert(Label), labels)
        if events:
            s.execute(insert(LabelEvent), events)
        s.flush()
        return batch.id

    def carry(self, s: Session, carries: Sequence[Carry], who: str, source: str) -> int:
        """In an ingest's session: each changed path's label goes to its new image, flagged
        "content changed since labeled" unless the pixels are the same. A new image that has
        a label of its own keeps it. Returns how many labels were carried."""
        old = _current(s, [c.old for c in carries] + [c.new for c in carries])
        changes = []
        for c in carries:
            if c.old in old and c.new not in old:
                label, src, why = old[c.old]
                changes.append(Change(c.new, label, src, why if c.same_pixels else CHANGED))
        if changes:
            note = "the labeled files' bytes changed: " + ", ".join(c.path for c in carries)
            self._apply(s, changes, BatchInfo("carry", who, source, note[:2000]))
        return len(changes)


def _after(c: Change) -> tuple[str | None, str | None, str | None]:
    """(label, source, review reason) an image has after the change."""
    return (c.label, c.source, c.review_reason) if c.label is not None else (None, None, None)


def _current(s: Session, ids: Sequence[int]) -> dict[int, tuple[str, str, str | None]]:
    """image id -> (label, source, review reason) of the labeled ones among ``ids``."""
    cols = select(Label.image_id, Label.label, Label.source, Label.review_reason)
    out = {}
    for part in in_chunks(ids):
        out.update(
            {
                i: (lab, src, why)
                for i, lab, src, why in s.execute(cols.where(Label.image_id.in_(part)))
            }
        )
    return out


def _paths(s: Session, ids: Sequence[int]) -> dict[int, str]:
    out: dict[int, str] = {}
    for part in in_chunks(ids):
        out.update(s.execute(select(Image.id, Image.path).where(Image.id.in_(part))).all())
    return out
