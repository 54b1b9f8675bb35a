"""Results of getting images and vectors in and out: ingest, embed, reindex, transform,
import and export of vectors."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..params import FP32


@dataclass
class SpaceEmbedStats:
    space: str
    embedded: int = 0
    failed: int = 0
    seconds: float = 0.0
    device: str = "cpu"
    weights: str = "none"
    weights_random: bool = False
    precision: str = FP32  # of the forward pass (vecstore.params.PRECISIONS)
    # descriptors are computed together in one pass over the files: their time is that pass's
    shared_with: list[str] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "space": self.space,
            "embedded": self.embedded,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
            "images_per_s": round(self.per_second, 1),
            "device": self.device,
            "weights": self.weights,
            "weights_random": self.weights_random,
            "precision": self.precision,
            "shared_with": self.shared_with,
        }


@dataclass
class IngestReport:
    root: str
    run_id: int | None = None
    scanned: int = 0
    added: int = 0
    unchanged: int = 0
    changed: int = 0
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (new path, existing path)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    # known files unreadable now: image, vectors, labels kept, tried again next time
    unavailable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    missing: list[str] = field(default_factory=list)  # known files under the folder, gone
    # left out by the scan, never stored: a name not UTF-8, a link leaving the folder, a
    # folder that cannot be read (path shown with undecodable bytes escaped, reason)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    labels_carried: int = 0  # expert labels that followed their file to new content
    labels_added: int = 0
    label_conflicts: list[tuple[str, str, str]] = field(default_factory=list)  # path, old, new
    metadata_matched: int = 0
    metadata_unmatched: list[str] = field(default_factory=list)
    embedded: list[SpaceEmbedStats] = field(default_factory=list)
    scan_vectors: dict[str, int] = field(default_factory=dict)  # space -> vectors made in the scan
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "run_id": self.run_id,
            "scanned": self.scanned,
            "added": self.added,
            "unchanged": self.unchanged,
            "changed": self.changed,
            "duplicates": [{"path": p, "same_as": q} for p, q in self.duplicates],
            "failed": [{"path": p, "reason": r} for p, r in self.failed],
            "unavailable": [{"path": p, "reason": r} for p, r in self.unavailable],
            "missing": self.missing,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "labels_carried": self.labels_carried,
            "labels_added": self.labels_added,
            "label_conflicts": [
                {"path": p, "kept": old, "ignored": new} for p, old, new in self.label_conflicts
            ],
            "metadata_matched": self.metadata_matched,
            "metadata_unmatched": self.metadata_unmatched,
            "embedded": [s.to_dict() for s in self.embedded],
            "seconds": round(self.seconds, 3),
        }


@dataclass
class IndexStats:
    """What an index build made: the factory, why, the search parameters tuned and the
    recall@k they reach against exact search on a sample of the vectors."""

    factory: str
    why: str
    exact: bool
    n: int
    target: float
    k: int
    params: dict[str, int]
    recall: float
    sample: int
    seconds: float
    built_at: str

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> IndexStats | None:
        """The stats a space's row keeps as JSON (None when no index was built yet)."""
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__}) if d else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Reindexed:
    space: str
    vectors: int
    index: IndexStats  # always built by a reindex

    def to_dict(self) -> dict[str, Any]:
        return {"space": self.space, "vectors": self.vectors, **self.index.to_dict()}


@dataclass
class Transformed:
    """A space's vector transform chosen (``vecstore transform``): what its vectors now go
    through before the cosine, fitted on how many, and the index rebuilt under it."""

    run_id: int
    space: str
    kind: str  # raw | center | pca
    description: str  # "raw cosine", "mean-centred", "PCA-whitened to 50 dims"
    dim_in: int
    dim_out: int
    fitted_on: int  # vectors the fit used (0 for raw)
    vectors: int  # vectors in the space
    params: dict[str, Any]  # as fitted (PCA: n_components, seed, explained_variance_ratio)
    seconds: float
    index: IndexStats | None = None  # the index built under it
    chosen_by: dict[str, Any] | None = None  # kind "auto": the out-of-fold scores it chose by

    def stats(self) -> dict[str, Any]:
        """What the run records."""
        out = asdict(self)
        for key in ("run_id", "space", "index"):
            out.pop(key)
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class VectorImport:
    space: str
    dim: int
    rows: int
    new_images: int
    existing_images: int
    skipped_already_imported: int
    seconds_rows: float
    seconds: float
    index: IndexStats | None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["index"] = self.index.to_dict() if self.index else None
        return out


@dataclass
class VectorExport:
    """A space's vectors written to a Parquet file (``vecstore export-vectors``)."""

    path: str
    space: str
    dim: int
    rows: int  # images written: the usable images with a vector in the space
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
