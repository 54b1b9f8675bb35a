"""Results of the outputs: the pseudo-label export and the report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SUGGESTION_COLUMNS = [
    "path",
    "label",
    "reason",
    "pseudo_label",
    "confidence",
    "margin",
    "cluster",
    "image_id",
    "space",
]


@dataclass
class Suggestion:
    """An image to label next; ``label`` is empty, for the person who fills it."""

    image_id: int
    path: str | None
    reason: str
    pseudo_label: str | None
    confidence: float | None
    margin: float | None
    cluster: int
    space: str
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Export:
    path: str
    rows: int
    run_id: int
    space: str
    cluster_run_id: int | None
    review_share: float | None  # least sure share of pseudo-labels flagged (None: all)
    review_from: str  # "given" | "evaluate run N" | "default"
    expected_accuracy: float | None  # of the unflagged pseudo-labels, as evaluated
    positive_rule: dict[str, Any] | None
    needs_review: int
    by_source: dict[str, int]
    classes: list[str] = field(default_factory=list)
    format: str = "csv"  # vecstore.params.EXPORT_FORMATS
    # label-studio: the labeling config written beside the tasks, and the folder Label Studio
    # must serve the images from (LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)
    label_config: str | None = None
    document_root: str | None = None
    # fiftyone and imagefolder: how the images are held, and the rows without a label left out
    media: str | None = None
    skipped_unlabeled: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReportFile:
    path: str
    bytes: int
    points: int
    images: int
    seconds: float
    space: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
