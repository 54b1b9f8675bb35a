"""The result of `plan`: what labeling, compute and storage a scale-up will need."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class ComputeOption:
    images_per_s: float
    measured: bool
    hours: float
    eur: float


@dataclass
class StoragePlan:
    vectors_bytes: int
    database_bytes: int
    db_overhead_per_image: float
    index: str
    index_bytes: int
    index_why: str


@dataclass
class QualityEstimate:
    curve_run: int | None = None
    labels: int | None = None
    per_class: float | None = None
    expected_accuracy: float | None = None
    fitted_accuracy: float | None = None
    how: str | None = None
    positive: str | None = None
    expected_recall: float | None = None
    fitted_recall: float | None = None


@dataclass
class Plan:
    space: str
    images: int
    budget_eur: float
    eur_per_label: float
    compute: dict[str, ComputeOption]  # "cpu" / "gpu"
    compute_choice: str
    max_hours: float
    compute_eur: float
    labels_affordable: int
    storage: StoragePlan
    quality: QualityEstimate
    classes: list[str]
    target_accuracy: float
    feasible: bool
    problems: list[str]
    conditions: list[str]
    assumptions: list[str]
    # with a positive class: random labels a recall promise needs (None: no positive given)
    promise_labels_needed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
