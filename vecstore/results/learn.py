"""Results of the learning verbs: clustering, propagation, method comparison, evaluation,
the learning curve and the suggestions of what to label next."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover  (annotations only: results stay light to import)
    from ..learn.curves import CurveFit
    from ..learn.graph import GraphHealth, GraphStats
    from ..learn.guarantee import RecallPromise
    from ..learn.metrics import ClassificationScores
    from ..learn.review import ReviewCalibration


@dataclass
class Clustering:
    run_id: int
    space: str
    method: str
    k: int
    n: int
    scored_against: str  # "truth" | "expert labels"
    n_scored: int
    sizes: list[int]
    silhouette_by_k: dict[int, float] | None
    weights_random: bool
    metrics: dict[str, float]  # ami, ari, homogeneity, ..., silhouette

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Propagation:
    run_id: int
    space: str
    n: int
    classes: list[str]
    seeds: int
    propagated: int
    counts: dict[str, int]  # pseudo-label -> images among the unlabeled ones
    graph: GraphStats | None  # None for a method without the k-NN graph
    unreached: int
    no_label: int
    mean_confidence: float | None
    cg_iterations: list[int]
    weights_random: bool
    seconds: dict[str, float]  # load, graph, solve, write
    # components of the graph against the seeds, with warnings and the images to label
    health: GraphHealth | None = None
    method: str = "propagation"  # a vecstore.params.LABEL_METHODS key
    chosen_by: dict[str, Any] | None = None  # method "auto": the MethodComparison that chose

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["graph"] = self.graph.to_dict() if self.graph else None
        out["health"] = self.health.to_dict() if self.health else None
        return out


@dataclass
class ChosenScore:
    """Out-of-fold accuracy of the expert labels chosen one way (folder, import, suggested,
    review): the actively chosen ones are harder, so they are reported apart."""

    chosen: str
    labels: int
    accuracy: float


@dataclass
class HoldoutDetails:
    """How the expert labels were scored out-of-fold: K folds (kept whole by ``grouped_by``),
    each fold's labels predicted by ``method`` fitted on the others'."""

    folds: int
    grouped_by: str | None
    method: str
    n_neighbors: int
    alpha: float
    gamma: float
    scored: int  # labels the scores rest on
    scored_on: str  # "labels vecstore did not pick" | "every expert label"
    accuracy_per_fold: list[float]
    accuracy_mean: float
    accuracy_std: float
    by_chosen: list[ChosenScore]


@dataclass
class MethodScore:
    """One method's out-of-fold scores: mean and standard deviation over the folds of
    accuracy, balanced_accuracy, recall_pos, f2_pos and roc_auc (None where undefined)."""

    method: str
    means: str  # what the method does, in a line
    mean: dict[str, float | None]
    std: dict[str, float | None]


@dataclass
class MethodComparison:
    """Methods scored on the same folds; ``best`` by ``criterion`` (f2_pos when there is a
    positive class, else accuracy)."""

    space: str
    folds: int
    labels: int
    positive: str | None
    criterion: str
    best: str
    rows: list[MethodScore]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TruthDetails:
    propagation_run: int
    scored: int


@dataclass
class Evaluation:
    """How good pseudo-labels are, scored against a truth file (``mode`` "truth") or out-of-fold
    on the expert labels (``mode`` "holdout"), with the share of least sure pseudo-labels to
    flag for review so that the others reach the target accuracy."""

    run_id: int
    space: str
    mode: str
    details: HoldoutDetails | TruthDetails
    scores: ClassificationScores
    review: ReviewCalibration
    weights_random: bool
    # with a positive class: the threshold whose recall holds at the stated confidence, from
    # out-of-fold scores of the expert labels (or why it cannot be promised)
    recall_promise: RecallPromise | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "space": self.space,
            "mode": self.mode,
            **asdict(self.details),
            **self.scores.to_dict(),
            "review": self.review.to_dict(),
            "weights_random": self.weights_random,
        }
        if self.recall_promise is not None:
            out["recall_promise"] = self.recall_promise.to_dict()
        return {**out, "run_id": self.run_id}


@dataclass
class CurvePoint:
    labels: int
    per_class: float
    accuracy: float
    accuracy_std: float
    recall: float | None
    recall_std: float | None


@dataclass
class LearningCurve:
    run_id: int
    space: str
    source: str  # "truth" | "expert labels"
    known: int
    classes: list[str]
    repeats: int
    points: list[CurvePoint]
    fit: CurveFit | None
    positive: str | None
    recall_fit: CurveFit | None
    store_images: int
    weights_random: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
