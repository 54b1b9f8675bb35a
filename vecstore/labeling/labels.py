"""Expert labels one image at a time (set, remove), the store's classes, and the counts per
label, source and way chosen (with the latest pseudo-labels). Every change is a recorded label
batch."""

from __future__ import annotations

import getpass
import os
import re
from collections import Counter
from typing import TYPE_CHECKING

from .. import dicom
from ..db.labels import BatchInfo, Change
from ..errors import BadInput, EmbedError, UnknownImage
from ..imagefile import sha256_image_file
from ..params import CHOSEN_GIVEN
from ..results import LabelChange, LabelCount
from .export import export_rows, review_rules

if TYPE_CHECKING:  # pragma: no cover
    from ..db import Database

SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def resolve_image(db: Database, target: str) -> int:
    """An image id from a path (a frame's: FILE#frame=N; or identical bytes), a sha256 or
    an id number."""
    if dicom.file_exists(target):
        img = db.images.by_path(target) or db.images.by_sha(_sha256(target))
        if img is not None:
            return img.id
        raise UnknownImage(f"{target} is not in the store (ingest its folder first)")
    if SHA_RE.match(target.lower()):
        img = db.images.by_sha(target.lower())
        if img is not None:
            return img.id
    if target.isdigit() and db.images.get(int(target)) is not None:
        return int(target)
    raise UnknownImage(f"no image {target!r} in the store (give a path, a sha256 or an id)")


def _sha256(path: str) -> str:
    """The hash of a file named on the command line: a regular file within the size limit
    (a FIFO or a device is refused at once, never read)."""
    try:
        return sha256_image_file(path)
    except EmbedError as exc:
        raise BadInput(f"{path}: {exc}") from None


def classes(db: Database) -> list[str]:
    """The classes of the store: its distinct expert labels, sorted."""
    return db.labels.distinct()


def check_new_classes(db: Database, labels: set[str], allow_new: bool) -> None:
    """Refuse labels that are not yet a class of a store that has classes (a typo?)."""
    known = set(classes(db))
    new = sorted(labels - known)
    if known and new and not allow_new:
        raise BadInput(
            f"unknown label(s) {', '.join(map(repr, new))}: this store's classes are "
            f"{', '.join(map(repr, sorted(known)))}. Fix the spelling, or pass --new-class "
            "to add a class."
        )


def check_chosen(chosen: str) -> None:
    """How a person says labels were chosen: one of CHOSEN_GIVEN (folder: an ingest only)."""
    if chosen not in CHOSEN_GIVEN:
        raise BadInput(f"chosen {chosen!r} is not one of {', '.join(CHOSEN_GIVEN)}")


def who_is(who: str | None) -> str:
    """Who a label change is recorded for: as given, else $VECSTORE_USER, else the login."""
    return who or os.environ.get("VECSTORE_USER") or getpass.getuser()


def set_label(
    db: Database,
    target: str,
    label: str,
    *,
    replace: bool = False,
    new_class: bool = False,
    source: str = "cli",
    who: str | None = None,
    chosen: str = "review",
) -> LabelChange:
    """Set the expert label of one image (a batch of one); ``chosen``: how the image came to
    be labeled (default "review": a person looked at this one image)."""
    label = label.strip()
    if not label:
        raise BadInput("the label is empty")
    check_chosen(chosen)
    iid = resolve_image(db, target)
    check_new_classes(db, {label}, new_class)
    row = db.labels.get(iid)
    if row is not None and row.label != label and not replace:
        raise BadInput(
            f"image {iid} already has the expert label {row.label!r} (from {row.source}); "
            "pass --replace to change it"
        )
    change = Change(iid, label, source, chosen=chosen)
    batch = db.labels.apply([change], BatchInfo("set", who_is(who), source, target))
    return LabelChange(iid, label, row.label if row else None, batch)


def remove_label(
    db: Database, target: str, *, who: str | None = None, source: str = "cli"
) -> LabelChange:
    """Remove the expert label of one image (a batch of one, which ``undo`` restores)."""
    iid = resolve_image(db, target)
    row = db.labels.get(iid)
    if row is None:
        raise BadInput(f"image {iid} has no expert label to remove")
    info = BatchInfo("remove", who_is(who), source, target)
    batch = db.labels.apply([Change(iid, None)], info)
    return LabelChange(iid, None, row.label, batch)


def expert_counts(db: Database) -> list[LabelCount]:
    """Expert labels per label and source, with how many are flagged for review."""
    return [LabelCount(lab, src, n, flagged) for lab, src, n, flagged in db.labels.counts()]


def label_counts(db: Database) -> list[LabelCount]:
    """Expert labels per label, source and way chosen, and the pseudo-labels of the latest
    propagation."""
    rows = [
        LabelCount(lab, src, n, flagged, chosen)
        for lab, src, chosen, n, flagged in db.labels.counts(by_chosen=True)
    ]
    run = db.runs.latest("propagate")
    if run is None:
        return rows
    table = export_rows(db, run, review_rules(db, run, None), None)
    flagged = Counter((r["label"], r["needs_review"]) for r in table if r["source"] == "propagated")
    for lab in sorted({k[0] for k in flagged}, key=str):
        n = flagged[(lab, True)] + flagged[(lab, False)]
        rows.append(
            LabelCount(lab, f"propagated (run {run.id}, {run.space})", n, flagged[(lab, True)])
        )
    return rows
