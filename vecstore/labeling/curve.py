"""The learning curve of a space, as a recorded run: accuracy (and recall of a positive
class) against the number of known labels, fitted a - b m^-c so that `vecstore plan` can
extrapolate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import BadInput
from ..learn.curves import fit_learning_curve
from ..learn.splits import draw_with_every_class
from ..params import PropagationParams
from ..results import CurvePoint, LearningCurve
from .data import space_matrix
from .propagation import spread

if TYPE_CHECKING:  # pragma: no cover
    from ..db import Database

CURVE_SIZES = 8  # label counts measured when none are given


@dataclass
class _Known:
    """The vectors of a space and its known labels (expert labels or truth)."""

    x: np.ndarray
    ids: np.ndarray
    row_of: dict[int, int]  # image id -> row of x
    image_ids: np.ndarray  # the images whose label is known, sorted
    labels: np.ndarray  # their labels
    classes: list[str]


def learning_curve(
    db: Database,
    space: str | None,
    *,
    truth: dict[int, str] | None = None,
    sizes: list[int] | None = None,
    repeats: int = 5,
    seed: int = 0,
    positive: str | None = None,
    params: PropagationParams | None = None,
) -> LearningCurve:
    """For each size m, ``repeats`` random draws of m known labels (the expert labels, or
    ``truth``; at least one per class), propagated and scored on the other known labels."""
    params = params or PropagationParams()
    sp, ids, x = space_matrix(db, space)
    pool = truth if truth is not None else db.labels.all()
    row_of = {int(i): r for r, i in enumerate(ids)}
    image_ids = np.array(sorted(i for i in pool if i in row_of), dtype=np.int64)
    labels = np.array([pool[int(i)] for i in image_ids], dtype=object)
    known = _Known(x, ids, row_of, image_ids, labels, sorted(set(labels)))
    sizes = _sizes(len(image_ids), known.classes, positive, sizes)
    run_params = {
        "sizes": sizes,
        "repeats": repeats,
        "seed": seed,
        "positive": positive,
        "n_neighbors": params.n_neighbors,
        "alpha": params.alpha,
    }
    with db.runs.record("learning_curve", sp.name, run_params) as run:
        rng = np.random.default_rng(seed)
        points = [_point(known, m, repeats, positive, params, rng) for m in sizes]
        m_arr = np.array([p.labels for p in points])
        std = np.array([p.accuracy_std for p in points])
        fit = fit_learning_curve(m_arr, np.array([p.accuracy for p in points]), std)
        recall_fit = None
        if positive is not None and all(p.recall is not None for p in points):
            recall_fit = fit_learning_curve(
                m_arr,
                np.array([p.recall for p in points]),
                np.array([p.recall_std for p in points]),
            )
        result = LearningCurve(
            run_id=run.id,
            space=sp.name,
            source="truth" if truth is not None else "expert labels",
            known=len(image_ids),
            classes=known.classes,
            repeats=repeats,
            points=points,
            fit=fit,
            positive=positive,
            recall_fit=recall_fit,
            store_images=len(ids),
            weights_random=sp.weights_random,
        )
        run.stats = result.to_dict()
    return result


def _sizes(
    n_known: int, classes: list[str], positive: str | None, sizes: list[int] | None
) -> list[int]:
    """The label counts to measure: between one per class and four fifths of the known
    labels (a fifth is always kept to score on)."""
    if len(classes) < 2 or n_known < len(classes) + 2:
        raise BadInput(
            "a learning curve needs known labels of at least two classes and a few "
            "more images than classes (expert labels, or --truth FILE.csv)"
        )
    if positive is not None and positive not in classes:
        raise BadInput(f"--positive {positive!r} is not one of the labels ({', '.join(classes)})")
    top = n_known - max(1, n_known // 5)
    if sizes is None:
        sizes = sorted({int(round(v)) for v in np.geomspace(len(classes), top, CURVE_SIZES)})
    sizes = [m for m in sizes if len(classes) <= m <= top]
    if not sizes:
        raise BadInput(f"no size between {len(classes)} (one per class) and {top} labels")
    return sizes


def _point(
    k: _Known,
    m: int,
    repeats: int,
    positive: str | None,
    params: PropagationParams,
    rng: np.random.Generator,
) -> CurvePoint:
    """Accuracy (and recall of ``positive``) over ``repeats`` draws of m labels."""
    accs, recalls = [], []
    for _ in range(repeats):
        chosen, hidden = draw_with_every_class(k.labels, k.classes, m, rng)
        seeds = {int(k.image_ids[j]): k.labels[j] for j in chosen}
        cls, lp = spread(k.x, k.ids, seeds, params)
        rows = [k.row_of[int(k.image_ids[j])] for j in hidden]
        pred = np.array([cls[t] if t >= 0 else None for t in lp.transduction_[rows]], dtype=object)
        truth = k.labels[hidden]
        accs.append(float((pred == truth).mean()))
        if positive is not None and (truth == positive).any():
            recalls.append(float((pred[truth == positive] == positive).mean()))
    return CurvePoint(
        labels=m,
        per_class=round(m / len(k.classes), 3),
        accuracy=float(np.mean(accs)),
        accuracy_std=float(np.std(accs)),
        recall=float(np.mean(recalls)) if recalls else None,
        recall_std=float(np.std(recalls)) if recalls else None,
    )
