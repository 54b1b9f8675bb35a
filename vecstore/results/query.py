"""Results of reading a store: a similarity query, the store's info, its check."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..params import FP32


@dataclass
class Hit:
    rank: int
    id: int
    path: str
    similarity: float
    label: str | None


@dataclass
class QueryResult:
    space: str
    weights: str
    weights_random: bool
    query: str
    query_id: int | None
    hits: list[Hit]
    where: tuple[tuple[str, str], ...] = ()  # the metadata filter, when one was given
    selected: int | None = None  # the images it selected (None: no filter)

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                **asdict(h),
                "similarity": round(h.similarity, 6),
                "space": self.space,
                "weights_random": self.weights_random,
            }
            for h in self.hits
        ]


@dataclass
class SpaceSummary:
    name: str
    model: str
    layer: str | None
    dim: int
    vectors: int
    weights: str
    weights_random: bool
    preprocessing: str
    index_type: str | None
    index_setting: str  # the factory asked for with --index, or "auto"
    memory_budget: int | None
    index_params: dict[str, int] | None
    index_recall_at_10: float | None
    index_recall_sample: int | None
    index_built_for: int | None
    index_file: str | None
    transform: str = "raw cosine"  # what the vectors go through before the cosine
    transform_kind: str = "raw"  # raw | center | pca (vecstore transform)
    precision: str = FP32  # of the CNN forward pass (vecstore.params.PRECISIONS)


@dataclass
class MetadataColumn:
    """A metadata column of the store's images (from a metadata CSV or a DICOM header)."""

    name: str
    images: int  # usable images that have a value
    values: int  # distinct values
    identifying: bool  # points at a patient or an examination: out of exports unless named


@dataclass
class LabelCount:
    label: str | None
    source: str
    count: int
    needs_review: int | None = None  # for pseudo-labels: how many are flagged
    # how these expert labels' images were chosen (vecstore.params.CHOSEN_HOW); None for
    # pseudo-labels, and for expert labels only counted per label and source
    chosen: str | None = None


@dataclass
class StoreInfo:
    store: str
    schema_version: str | None
    vecstore_version: str
    images: int
    failed: int
    paths: int
    spaces: list[SpaceSummary]
    labels: list[LabelCount]
    failures: list[tuple[str, str]] | None = None  # (path, reason), when asked for
    metadata: list[MetadataColumn] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "store": self.store,
            "schema_version": self.schema_version,
            "vecstore_version": self.vecstore_version,
            "images": self.images,
            "failed": self.failed,
            "paths": self.paths,
            "spaces": [asdict(s) for s in self.spaces],
            "labels": [
                {"label": c.label, "source": c.source, "count": c.count} for c in self.labels
            ],
            "metadata": [asdict(c) for c in self.metadata],
        }
        if self.failures is not None:
            out["failures"] = [{"path": p, "reason": r} for p, r in self.failures]
        return out


@dataclass
class CheckReport:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)  # what `check --fix` repaired first

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, **asdict(self)}
