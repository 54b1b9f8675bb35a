"""The history of the expert labels: every batch of changes, the changes of one image or path,
and the undo of a batch (itself a batch), which restores exactly the labels it replaced (label,
source, review reason, and how the image came to be labeled)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..db.labels import NO_LABEL, BatchInfo, Change, State
from ..errors import BadInput, UnknownImage
from ..results import LabelBatchRow, LabelEventRow, LabelUndo
from .labels import resolve_image, who_is

if TYPE_CHECKING:  # pragma: no cover
    from ..db import Database
    from ..db.models import LabelBatch, LabelEvent


def batches(db: Database) -> list[LabelBatchRow]:
    """Every label batch, oldest first."""
    return [
        LabelBatchRow(
            b.id,
            b.created_at.isoformat(timespec="seconds"),
            b.who,
            b.kind,
            b.source,
            n,
            b.undone_by,
            b.note,
        )
        for b, n in db.labels.batches()
    ]


def history(db: Database, target: str) -> list[LabelEventRow]:
    """The label changes of one image (a path, sha256 or id), oldest first; a path whose
    image is gone still shows what happened to the labels filed under it."""
    try:
        ids = [resolve_image(db, target)]
    except UnknownImage:
        ids = []
    path = os.path.abspath(target) if not ids or os.path.exists(target) else None
    if not ids and path is None:
        raise UnknownImage(f"no image {target!r} in the store (give a path, a sha256 or an id)")
    return [
        LabelEventRow(
            b.id,
            b.created_at.isoformat(timespec="seconds"),
            b.who,
            b.kind,
            b.source,
            e.image_id,
            e.path,
            e.old_label,
            e.old_source,
            e.new_label,
            e.new_source,
            e.new_review,
            e.old_chosen,
            e.new_chosen,
        )
        for e, b in db.labels.events(image_ids=ids, path=path)
    ]


def undo(db: Database, batch_id: int | None = None, *, who: str | None = None) -> LabelUndo:
    """Undo a batch (default: the latest that is not an undo and not undone): every image
    gets back the label it had before it. Refused when a later batch changed one of its
    images since (undo that one first)."""
    batch = _undoable(db, batch_id)
    events = [e for e, _ in db.labels.events(batch_id=batch.id)]
    alive = db.images.existing([e.image_id for e in events])
    live = [e for e in events if e.image_id in alive]  # an image gone since has no label now
    now = db.labels.current([e.image_id for e in live])
    for e in live:
        if now.get(e.image_id, NO_LABEL) != _after(e):
            later = db.labels.later_change(e.image_id, batch.id)
            raise BadInput(
                f"batch {batch.id} cannot be undone: {e.path or e.image_id} was changed after "
                f"it by batch {later}; undo batch {later} first (vecstore labels undo "
                f"--batch {later}), or change that label with `vecstore labels set`"
            )
    changes = [
        Change(e.image_id, e.old_label, e.old_source, e.old_review, e.old_chosen) for e in live
    ]
    info = BatchInfo("undo", who_is(who), f"undo of batch {batch.id}", batch.note)
    new_id = db.labels.apply(changes, info, undoes=batch.id)
    return LabelUndo(
        batch=batch.id,
        kind=batch.kind,
        undo_batch=new_id,
        restored=len(changes),
        gone=len(events) - len(changes),
    )


def _after(e: LabelEvent) -> State:
    """The label an event left: (label, source, review reason, chosen)."""
    if e.new_label is None:
        return NO_LABEL
    return (e.new_label, e.new_source, e.new_review, e.new_chosen)


def _undoable(db: Database, batch_id: int | None) -> LabelBatch:
    if batch_id is None:
        batch = db.labels.last_undoable()
        if batch is None:
            raise BadInput("no label change to undo (see `vecstore labels history`)")
    else:
        batch = db.labels.batch(batch_id)
        if batch is None:
            raise BadInput(f"no label batch {batch_id} (see `vecstore labels history`)")
    if batch.undone_by is not None:
        raise BadInput(f"batch {batch.id} was undone already, by batch {batch.undone_by}")
    if batch.kind == "forget":
        raise BadInput(
            f"batch {batch.id} dropped the labels of images forgotten with `vecstore forget`: "
            "it cannot be undone (the images are gone); ingest the files again, then set "
            "their labels (`vecstore labels history PATH` shows what they were)"
        )
    return batch
