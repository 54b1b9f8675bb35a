"""The parameters of every workflow, with their defaults and their checks, declared once: the
estimators, the Store, the CLI's options and the benches all take them from here. Pure
dataclasses (no heavy import), so that the CLI can show the defaults in --help instantly.

>>> PropagationParams(n_neighbors=10).alpha
0.99
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .errors import BadInput

DEFAULT_UNLABELED = ("unlabeled", "sans_label")

# How an expert label's image came to be labeled (labels.chosen), each with what it means.
CHOSEN_HOW = {
    "folder": "its folder named its class (ingest --labels-from-folders)",
    "import": "a row of a labels CSV that vecstore did not pick (presumed drawn at random)",
    "suggested": "picked by `vecstore suggest` (active learning: the hardest images)",
    "review": "a person looked at this image and set its label, or accepted its pseudo-label",
}
# The ways not picked by vecstore: only their labels estimate accuracy without bias (the
# actively chosen ones are harder, and are reported apart).
NOT_PICKED_BY_VECSTORE = ("folder", "import")
CHOSEN_GIVEN = ("import", "suggested", "review")  # what `labels import/set --chosen` may say


class ParamError(ValueError):
    """A parameter out of its range: ``field`` names it, the message says what it must be."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field} {message}")
        self.field = field
        self.reason = message  # folder names that mean "no label"


def parse_size(text: str) -> int:
    """'8G', '512M', '2.5GiB' or a number of bytes -> bytes."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    mult = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}.get(t[-1:], 1)
    try:
        value = float(t[:-1] if mult > 1 else t)
    except ValueError:
        raise ValueError(
            f"cannot read {text!r} as a size: write e.g. 8G, 512M or 1000000"
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"a size must be a positive number of bytes, not {text!r}")
    return int(value * mult)


# How expert labels become class probabilities for every image (vecstore.learn.methods);
# "auto" picks one by its out-of-fold score on the expert labels.
LABEL_METHODS = {
    "propagation": "label propagation on the k-NN graph, each class's seeds weighing 1 in all",
    "propagation-unbalanced": "label propagation on the k-NN graph, each seed weighing 1",
    "knn": "similarity-weighted vote of the k nearest expert labels",
    "logistic": "logistic-regression probe on the vectors (scikit-learn)",
    "label-spreading": "scikit-learn LabelSpreading, k-NN kernel (the reference)",
}
AUTO = "auto"
# what `evaluate --compare-methods` scores each method by, per fold
METHOD_METRICS = ("accuracy", "balanced_accuracy", "recall_pos", "f2_pos", "roc_auc")


@dataclass(frozen=True)
class PropagationParams:
    """How expert labels are spread (vecstore.learn.methods): the method and its k-NN graph."""

    n_neighbors: int = 5  # neighbours per image in the k-NN graph
    alpha: float = 0.99  # diffusion strength (Zhou et al.), in (0, 1)
    gamma: float = 3.0  # edge weight = similarity ** gamma
    method: str = "propagation"  # a LABEL_METHODS key, or "auto"

    def __post_init__(self) -> None:
        if self.method != AUTO and self.method not in LABEL_METHODS:
            names = ", ".join([*LABEL_METHODS, AUTO])
            raise ParamError("method", f"{self.method!r} is not one of {names}")
        if not 0 < self.alpha < 1:
            raise ParamError("alpha", f"must be between 0 and 1 (exclusive), not {self.alpha}")
        if self.n_neighbors < 1:
            raise ParamError("n_neighbors", f"must be at least 1, not {self.n_neighbors}")
        if self.gamma <= 0:
            raise ParamError("gamma", f"must be positive, not {self.gamma}")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


METHODS = ("kmeans", "spectral")


@dataclass(frozen=True)
class ClusterParams:
    """How a space is clustered, with the defaults and checks declared once.

    ``k`` None: chosen by cosine silhouette in ``k_range`` (2..20 when that is None too).
    """

    k: int | None = None
    k_range: tuple[int, int] | None = None
    method: str = "kmeans"  # FAISS k-means, or spectral (k-means on graph eigenvectors)
    n_neighbors: int = 10  # k of the k-NN graph (spectral)
    n_init: int = 10  # k-means restarts
    seed: int = 1234

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ParamError("method", f"{self.method!r} is not kmeans or spectral")
        if self.k is not None and self.k_range is not None:
            raise ParamError("k", "give k or a range of k, not both")
        if self.k is not None and self.k < 2:
            raise ParamError("k", f"must be at least 2, not {self.k}")
        if self.k_range is not None and not 2 <= self.k_range[0] <= self.k_range[1]:
            raise ParamError("k_range", f"needs 2 <= LO <= HI, not {self.k_range}")
        if self.n_init < 1 or self.n_neighbors < 1:
            field = "n_init" if self.n_init < 1 else "n_neighbors"
            raise ParamError(field, f"must be at least 1, not {getattr(self, field)}")

    def ks(self) -> range:
        """The values of k tried when ``k`` is None."""
        lo, hi = self.k_range or (2, 20)
        return range(lo, hi + 1)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["k_range"] = list(self.k_range) if self.k_range else None
        return out


@dataclass(frozen=True)
class EvaluationParams:
    """What an evaluation aims at and how the expert labels are folded; defaults declared
    once."""

    positive: str | None = None  # the class whose misses cost most (e.g. cancer)
    target_recall: float = 0.95  # of the positive class
    target_accuracy: float = 0.97  # of the pseudo-labels not flagged needs_review
    repeats: int = 5  # draws of each label count for the learning curve
    seed: int = 0
    folds: int = 5  # cross-fitting: each expert label scored once, by a model without it
    confidence: float = 0.9  # probability that the promised recall holds on unlabeled images
    group_by: str | None = None  # metadata column (patient_id): folds never split a group

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ParamError("folds", f"must be at least 2, not {self.folds}")
        if not 0 < self.confidence < 1:
            raise ParamError("confidence", f"must be in (0, 1), not {self.confidence}")
        if not 0 < self.target_recall <= 1:
            raise ParamError("target_recall", f"must be in (0, 1], not {self.target_recall}")
        if not 0 < self.target_accuracy <= 1:
            raise ParamError("target_accuracy", f"must be in (0, 1], not {self.target_accuracy}")
        if self.repeats < 1:
            raise ParamError("repeats", f"must be at least 1, not {self.repeats}")

    def run_params(self, mode: str) -> dict:
        return {
            "mode": mode,
            "positive": self.positive,
            "target_recall": self.target_recall,
            "target_accuracy": self.target_accuracy,
            "repeats": self.repeats,
            "seed": self.seed,
            "folds": self.folds,
            "confidence": self.confidence,
            "group_by": self.group_by,
        }


# the numeric precision of a CNN's forward pass (`--precision`): float32, or autocast to
# bfloat16 / float16 (faster on GPUs with tensor cores; vectors within cosine 0.999 of fp32)
PRECISIONS = ("fp32", "bf16", "fp16")
FP32 = PRECISIONS[0]  # the default, and the only precision of the descriptors

# where a CNN's input is made from the decoded image (`--preprocess`): on the host (PIL resize
# and crop, the reference), on the device (uint8 pixels sent as they are, JPEG decoded there
# by nvJPEG on CUDA, resize/crop/normalise on the device), or auto: device on CUDA, else host
PREPROCESS = ("auto", "host", "device")


@dataclass(frozen=True)
class EmbedOptions:
    """How images become vectors: the CNN's weights (None: a space's recorded ones, else
    ImageNet), the device, images per batch and decoding workers (None: chosen from the
    machine and the device), the forward pass's precision (None: a space's recorded one,
    else fp32) and where the CNN input is prepared (PREPROCESS). Descriptors use only
    batch_size and workers."""

    weights: str | None = None
    device: str = "auto"
    batch_size: int | None = None
    workers: int | None = None
    precision: str | None = None
    preprocess: str = "auto"

    def to_params(self) -> dict[str, Any]:
        """What a run records of them (the weights are the space's, recorded there)."""
        return {k: v for k, v in asdict(self).items() if k != "weights"}


# what a multi-frame DICOM file gives: its middle frame, or each frame (`ingest --frames`)
FRAMES = ("middle", "all")

# `vecstore export --format`: vecstore's CSV, Label Studio tasks (JSON), a FiftyOne image
# classification dataset, torchvision's ImageFolder layout (the last two: folders)
EXPORT_FORMATS = ("csv", "label-studio", "fiftyone", "imagefolder")
# the images of a folder export, per format: copied, symlinked, or listed in data.json
FOLDER_MEDIA = {"fiftyone": ("copy", "symlink", "manifest"), "imagefolder": ("copy", "symlink")}
EXPORT_MEDIA = FOLDER_MEDIA["fiftyone"]  # every media of some format


@dataclass(frozen=True)
class ExportOptions:
    """Which propagation run (``run_id``, else the latest, of ``space`` when given) and which
    of its rows; ``review_share`` overrides the share of least sure pseudo-labels flagged."""

    space: str | None = None
    run_id: int | None = None
    only_unlabeled: bool = False
    min_confidence: float | None = None
    review_share: float | None = None
    # metadata columns added to the rows: names, "all" for every column that identifies no
    # one (vecstore.dicom.IDENTIFYING comes out only when named); none by default
    with_metadata: tuple[str, ...] = ()
    format: str = "csv"  # one of EXPORT_FORMATS
    media: str | None = None  # a folder format's (FOLDER_MEDIA; None: copy)

    def __post_init__(self) -> None:
        if self.format not in EXPORT_FORMATS:
            raise ParamError("format", f"must be one of {', '.join(EXPORT_FORMATS)}")
        media = FOLDER_MEDIA.get(self.format, ())
        if self.media is not None and self.media not in media:
            why = f"must be one of {', '.join(media)}" if media else "is for folder formats only"
            raise ParamError("media", f"{self.media!r} {why} (--format {self.format})")
        if self.with_metadata and self.format in FOLDER_MEDIA:
            raise ParamError("with_metadata", f"has no place in a {self.format} export")


@dataclass(frozen=True)
class PlanRequest:
    """What is planned for, and the prices and limits; defaults declared once."""

    images: int
    budget_eur: float
    eur_per_label: float
    space: str | None = None
    gpu_eur_per_hour: float = 2.5
    gpu_images_per_s: float | None = None  # when the store has not measured a GPU
    cpu_eur_per_hour: float = 0.0
    target_accuracy: float = 0.95
    memory_budget: int | None = None  # bytes for the index (default: the index choice's)
    max_hours: float = 48.0  # embedding must finish within this time
    positive: str | None = None  # the costly class: plan the labels its recall promise needs
    target_recall: float = EvaluationParams.target_recall
    confidence: float = EvaluationParams.confidence

    def __post_init__(self) -> None:
        if self.images < 1:
            raise ParamError("images", f"must be at least 1, not {self.images}")
        if self.budget_eur < 0:
            raise ParamError("budget_eur", f"must be 0 or more, not {self.budget_eur}")
        if self.eur_per_label <= 0:
            raise ParamError("eur_per_label", f"must be more than 0, not {self.eur_per_label}")
        if not 0 < self.target_recall < 1:
            raise ParamError("target_recall", f"must be in (0, 1), not {self.target_recall}")
        if not 0 < self.confidence < 1:
            raise ParamError("confidence", f"must be in (0, 1), not {self.confidence}")


@dataclass(frozen=True)
class FileLimits:
    """What vecstore agrees to read as an image: a regular file (never a FIFO or a device),
    at most ``max_bytes`` long, of at most ``max_pixels`` pixels once decoded (a small file
    can declare a huge image: a decompression bomb); links leaving the ingested folder are
    followed only with ``follow_links``."""

    max_pixels: int = 100_000_000  # 10,000 x 10,000; Pillow's own default warns at 89M
    max_bytes: int = 2**30
    follow_links: bool = False

    def __post_init__(self) -> None:
        if self.max_pixels < 1:
            raise ParamError("max_pixels", f"must be at least 1, not {self.max_pixels}")
        if self.max_bytes < 1:
            raise ParamError("max_bytes", f"must be at least 1, not {self.max_bytes}")


def parse_where(pairs: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """COLUMN=VALUE filters on metadata (query --where, the service's ``where``), as
    (column, value) pairs; the value compared as text."""
    out = []
    for pair in pairs:
        column, sep, value = pair.partition("=")
        if not sep or not column.strip():
            raise BadInput(f"where takes COLUMN=VALUE, not {pair!r}")
        out.append((column.strip(), value))
    return tuple(out)


def matches_where(metadata: Mapping[str, Any], where: Sequence[tuple[str, str]]) -> bool:
    """An image's metadata has every (column, value) of a where filter, the value compared as
    text (a number as Python writes it: 54 / 54.0)."""
    return all(str(metadata.get(column)) == value for column, value in where)
