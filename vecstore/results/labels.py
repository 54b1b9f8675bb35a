"""Results of the label verbs: set, import, forget, undo, and the label history."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class LabelImport:
    added: int = 0
    replaced: int = 0
    unchanged: int = 0
    # the labels written (added or replaced), by how their images were chosen (CHOSEN_HOW)
    chosen: dict[str, int] = field(default_factory=dict)
    tool: str = "csv"  # the file's writer: "csv" or "label-studio"
    skipped: int = 0  # Label Studio tasks without an annotation (nothing to import)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LabelChange:
    """One image's expert label set (``label``) or removed (``label`` None), and the one it
    had before."""

    image_id: int
    label: str | None
    previous: str | None
    batch: int | None = None  # the label batch recorded (None: nothing changed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Forgotten:
    paths: int  # paths the store no longer knows
    images: int  # images gone with them (no path left), with their vectors
    labels: int  # expert labels dropped with those images (recorded in ``batch``)
    batch: int | None  # the label batch that records them

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LabelUndo:
    batch: int  # the batch undone
    kind: str  # what it was (import, set, remove, ...)
    undo_batch: int | None  # the batch the undo is recorded as
    restored: int  # images given back their label from before
    gone: int  # images of the batch no longer in the store

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LabelBatchRow:
    id: int
    at: str
    who: str
    kind: str
    source: str
    changes: int
    undone_by: int | None
    note: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LabelEventRow:
    batch: int
    at: str
    who: str
    kind: str
    source: str  # the batch's
    image_id: int
    path: str | None
    old_label: str | None
    old_source: str | None
    new_label: str | None
    new_source: str | None
    review_reason: str | None  # set with the new label (content changed since labeled)
    old_chosen: str | None  # how the image came to be labeled, before and after
    new_chosen: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
