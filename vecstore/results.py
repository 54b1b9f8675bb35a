"""Typed results of the Store's verbs. The CLI (and any service) formats these; ``to_dict()``
gives the JSON of ``--json`` and what a run records as its stats."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover  (annotations only: results stay light to import)
    from .learn.curves import CurveFit
    from .learn.graph import GraphHealth, GraphStats
    from .learn.guarantee import RecallPromise
    from .learn.metrics import ClassificationScores
    from .learn.review import ReviewCalibration

# ---- ingest, embed, import ---------------------------------------------------------------


@dataclass
class SpaceEmbedStats:
    space: str
    embedded: int = 0
    failed: int = 0
    seconds: float = 0.0
    device: str = "cpu"
    weights: str = "none"
    weights_random: bool = False
    precision: str = "fp32"  # of the forward pass (vecstore.params.PRECISIONS)
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


# ---- query, info, check -------------------------------------------------------------------


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
    precision: str = "fp32"  # of the CNN forward pass (vecstore.params.PRECISIONS)


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


# ---- labels --------------------------------------------------------------------------------


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


# ---- clustering, propagation, evaluation --------------------------------------------------


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


# ---- suggestions, export, report -----------------------------------------------------------

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


# ---- plan ------------------------------------------------------------------------------------


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
