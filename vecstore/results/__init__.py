"""Typed results of the Store's verbs, one module per kind of verb. The CLI (and any service)
formats these; ``to_dict()`` gives the JSON of ``--json`` and what a run records as its stats."""

from .ingest import (
    IndexStats,
    IngestReport,
    Reindexed,
    SpaceEmbedStats,
    Transformed,
    VectorExport,
    VectorImport,
)
from .labels import Forgotten, LabelBatchRow, LabelChange, LabelEventRow, LabelImport, LabelUndo
from .learn import (
    ChosenScore,
    Clustering,
    CurvePoint,
    Evaluation,
    HoldoutDetails,
    LearningCurve,
    MethodComparison,
    MethodScore,
    Propagation,
    TruthDetails,
)
from .outputs import SUGGESTION_COLUMNS, Export, ReportFile, Suggestion
from .plan import ComputeOption, Plan, QualityEstimate, StoragePlan
from .query import (
    CheckReport,
    Hit,
    LabelCount,
    MetadataColumn,
    QueryResult,
    SpaceSummary,
    StoreInfo,
)

__all__ = [
    "SpaceEmbedStats",
    "IngestReport",
    "IndexStats",
    "Reindexed",
    "Transformed",
    "VectorImport",
    "VectorExport",
    "Hit",
    "QueryResult",
    "SpaceSummary",
    "MetadataColumn",
    "LabelCount",
    "StoreInfo",
    "CheckReport",
    "LabelImport",
    "LabelChange",
    "Forgotten",
    "LabelUndo",
    "LabelBatchRow",
    "LabelEventRow",
    "Clustering",
    "Propagation",
    "ChosenScore",
    "HoldoutDetails",
    "MethodScore",
    "MethodComparison",
    "TruthDetails",
    "Evaluation",
    "CurvePoint",
    "LearningCurve",
    "SUGGESTION_COLUMNS",
    "Suggestion",
    "Export",
    "ReportFile",
    "ComputeOption",
    "StoragePlan",
    "QualityEstimate",
    "Plan",
]
