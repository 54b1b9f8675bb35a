"""Expert labels: at most one per image, with where it came from. Pseudo-labels never land
here (they are predictions of a propagation run, vecstore.db.outputs).

Every change goes through ``apply`` (or ``carry``, inside an ingest): one batch row (kind,
who, source) and one event per image with its label before and after, in the same
transaction as the change itself, so that a batch can be shown and undone exactly. Each
label records how its image came to be labeled (``chosen``, one of vecstore.params.CHOSEN_HOW),
and its events that too, before and after.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from ..params import CHOSEN_HOW
from .connections import in_chunks
from .models import Image, Label, LabelBatch, LabelEvent, utcnow

if TYPE_CHECKING:  # pragma: no cover
    from .connections import Connections


@dataclass(frozen=True)
class Change:
    """An image's new expert label (``label`` None: no label), from ``source``, its image
    ``chosen`` as vecstore.params.CHOSEN_HOW says."""

    image_id: int
    label: str | None
    source: str | None = None
    review_reason: str | None = None
    chosen: str | None = None

    def __post_init__(self) -> None:
        if self.chosen is not None and self.chosen not in CHOSEN_HOW:
            raise ValueError(f"chosen {self.chosen!r} is not one of {', '.join(CHOSEN_HOW)}")


# An image's (label, source, review reason, chosen): all None when it has no label
State = tuple[str | None, str | None, str | None, str | None]
NO_LABEL: State = (None, None, None, None)


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

    def distinct(self) -> list[str]:
        """The distinct expert labels, sorted (read in SQLite: on every label write)."""
        with self.db.session() as s:
            return sorted(s.scalars(select(Label.label).distinct()).all())

    def get(self, image_id: int) -> Label | None:
        with self.db.session() as s:
            return s.scalar(select(Label).where(Label.image_id == image_id))

    def review_reasons(self) -> dict[int, str]:
        """image id -> why its expert label needs a look (content changed since labeled)."""
        q = select(Label.image_id, Label.review_reason).where(Label.review_reason.is_not(None))
        with self.db.session() as s:
            return dict(s.execute(q).all())

    def chosen(self) -> dict[int, str | None]:
        """image id -> how it came to be labeled (vecstore.params.CHOSEN_HOW), every label."""
        with self.db.session() as s:
            return dict(s.execute(select(Label.image_id, Label.chosen)).all())

    def counts(self, *, by_chosen: bool = False) -> list[tuple]:
        """(label, source, count, flagged for review), sorted by label then source; with
        ``by_chosen``, (label, source, chosen, count, flagged), one row per way chosen."""
        group = [Label.label, Label.source, *([Label.chosen] if by_chosen else [])]
        q = select(*group, func.count(), func.count(Label.review_reason))
        with self.db.session() as s:
            return [tuple(row) for row in s.execute(q.group_by(*group).order_by(*group))]

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
    def current(self, ids: Sequence[int]) -> dict[int, State]:
        """image id -> (label, source, review reason, chosen) of the labeled ones among
        ``ids``."""
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
        real = [c for c in changes if old.get(c.image_id, NO_LABEL) != _after(c)]
        if not real and not always:
            return None
        batch = LabelBatch(kind=info.kind, who=info.who, source=info.source, note=info.note)
        s.add(batch)
        s.flush()
        paths = _paths(s, [c.image_id for c in real])
        now = utcnow()
        for part in in_chunks([c.image_id for c in real]):
            s.execute(delete(Label).where(Label.image_id.in_(part)))
        labels = [_label_row(c, batch.id, now) for c in real if c.label is not None]
        events = [
            _event_row(c, old.get(c.image_id, NO_LABEL), batch.id, paths.get(c.image_id))
            for c in real
        ]
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
                label, src, why, chosen = old[c.old]
                why = why if c.same_pixels else CHANGED
                changes.append(Change(c.new, label, src, why, chosen))
        if changes:
            note = "the labeled files' bytes changed: " + ", ".join(c.path for c in carries)
            self._apply(s, changes, BatchInfo("carry", who, source, note[:2000]))
        return len(changes)


def _after(c: Change) -> State:
    """(label, source, review reason, chosen) an image has after the change."""
    return (c.label, c.source, c.review_reason, c.chosen) if c.label is not None else NO_LABEL


def _label_row(c: Change, batch_id: int, now: object) -> dict[str, object]:
    return {
        "image_id": c.image_id,
        "label": c.label,
        "source": c.source,
        "review_reason": c.review_reason,
        "chosen": c.chosen,
        "batch_id": batch_id,
        "created_at": now,
    }


def _event_row(c: Change, before: State, batch_id: int, path: str | None) -> dict[str, object]:
    new = _after(c)
    return {
        "batch_id": batch_id,
        "image_id": c.image_id,
        "path": path,
        "old_label": before[0],
        "old_source": before[1],
        "old_review": before[2],
        "old_chosen": before[3],
        "new_label": new[0],
        "new_source": new[1],
        "new_review": new[2],
        "new_chosen": new[3],
    }


def _current(s: Session, ids: Sequence[int]) -> dict[int, State]:
    """image id -> (label, source, review reason, chosen) of the labeled ones among ``ids``."""
    cols = select(Label.image_id, Label.label, Label.source, Label.review_reason, Label.chosen)
    out: dict[int, State] = {}
    for part in in_chunks(ids):
        out.update({i: tuple(rest) for i, *rest in s.execute(cols.where(Label.image_id.in_(part)))})
    return out


def _paths(s: Session, ids: Sequence[int]) -> dict[int, str]:
    out: dict[int, str] = {}
    for part in in_chunks(ids):
        out.update(s.execute(select(Image.id, Image.path).where(Image.id.in_(part))).all())
    return out
