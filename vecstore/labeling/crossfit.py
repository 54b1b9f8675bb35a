"""Every expert label scored out-of-fold (cross-fitting): the labels are split into K
stratified folds (kept whole by a metadata column such as patient_id when asked), and each
fold's labels are hidden and predicted by a method fitted on the other folds' labels. The
recall promise, the review flag's calibration, the evaluation's scores and the comparison of
methods all read these out-of-fold predictions, on the same folds."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import BadInput
from ..learn.splits import cross_fit_folds
from ..params import NOT_PICKED_BY_VECSTORE, EvaluationParams, PropagationParams
from .data import space_matrix
from .propagation import spread

if TYPE_CHECKING:  # pragma: no cover
    from ..db import Database
    from ..db.models import Space


@dataclass
class Experts:
    """A space's vectors with the rows of its expert-labeled images and how each label was
    chosen (folder, import, suggested, review)."""

    ids: np.ndarray
    x: np.ndarray
    row_of: dict[int, int]
    lab_ids: np.ndarray  # the labeled images with a vector, by id
    labels: np.ndarray  # their labels
    chosen: np.ndarray  # how each was chosen (None: not recorded)

    @classmethod
    def load(cls, db: Database, sp: Space) -> Experts:
        seeds = db.labels.all()
        how = db.labels.chosen()
        _, ids, x = space_matrix(db, sp.name)
        row_of = {int(i): r for r, i in enumerate(ids)}
        lab_ids = np.array(sorted(i for i in seeds if i in row_of), dtype=np.int64)
        labels = np.array([seeds[i] for i in lab_ids], dtype=object)
        chosen = np.array([how.get(int(i)) for i in lab_ids], dtype=object)
        return cls(ids, x, row_of, lab_ids, labels, chosen)

    @property
    def fair(self) -> np.ndarray:
        """Which labels vecstore did not pick (folder, import): they estimate accuracy without
        the bias of actively chosen (harder) images."""
        return np.array([c is None or c in NOT_PICKED_BY_VECSTORE for c in self.chosen], bool)

    def predict(self, train, test, classes: list[str], prop: PropagationParams):
        """Fit ``prop.method`` on the labels of rows ``train``: the class probabilities
        (``classes`` order) of rows ``test``, and those of every image without a label in
        this fit (the pseudo-labels the test rows are ranked among)."""
        kept = {int(self.lab_ids[j]): self.labels[j] for j in train}
        cls, est = spread(self.x, self.ids, kept, prop)
        dist = est.label_distributions_
        order = [cls.index(c) if c in cls else None for c in classes]
        p_all = np.zeros((len(self.ids), len(classes)), np.float32)
        for cj, src in enumerate(order):
            if src is not None:
                p_all[:, cj] = dist[:, src]
        rows = [self.row_of[int(self.lab_ids[j])] for j in test]
        unlabeled = np.ones(len(self.ids), bool)
        unlabeled[[self.row_of[int(i)] for i in kept]] = False
        return p_all[rows], p_all[unlabeled]


@dataclass
class OutOfFold:
    """The expert labels with their out-of-fold class probabilities. ``fold`` is each label's
    fold; ``pool[f]`` summarises the pseudo-labels of fold f's fit (p(class 1) with two
    classes, else the margin p1 - p2), among which its test labels are ranked."""

    labels: np.ndarray
    proba: np.ndarray  # (labels, classes)
    fold: np.ndarray
    pool: list[np.ndarray]
    fair: np.ndarray
    chosen: np.ndarray
    classes: list[str]
    method: str
    groups: str | None

    def scored(self) -> np.ndarray:
        """Which labels the scores rest on: the fairly chosen ones (``fair``) when they hold
        at least 2 of every class, else all of them."""
        fair = self.labels[self.fair]
        if all(int((fair == c).sum()) >= 2 for c in self.classes):
            return self.fair
        return np.ones(len(self.labels), bool)


def cross_fit(
    db: Database,
    experts: Experts,
    classes: list[str],
    params: EvaluationParams,
    prop: PropagationParams,
) -> OutOfFold:
    """Each expert label predicted once by ``prop.method`` fitted on the other folds
    (stratified K-fold, ``params.folds``; grouped by ``params.group_by`` when given)."""
    labels = experts.labels
    if len(labels) == 0 or min(Counter(labels).values()) < 2:
        raise BadInput(
            "scoring needs at least 2 expert labels of every class (one to fit on, one to "
            "score); add labels or give --truth FILE.csv"
        )
    groups = _groups(db, experts.lab_ids, params.group_by) if params.group_by else None
    proba = np.zeros((len(labels), len(classes)))
    fold = np.zeros(len(labels), int)
    pool = []
    for f, (train, test) in enumerate(cross_fit_folds(labels, params.folds, params.seed, groups)):
        proba[test], others = experts.predict(train, test, classes, prop)
        fold[test] = f
        pool.append(_summary(others))
    return OutOfFold(
        labels, proba, fold, pool, experts.fair, experts.chosen, classes, prop.method,
        params.group_by,
    )  # fmt: skip


def _summary(p: np.ndarray) -> np.ndarray:
    """What ranking needs of a fit's pseudo-labels: p(class 1) for two classes (the margin
    then depends on the threshold, chosen later), else the margin p1 - p2."""
    if p.shape[1] == 2:
        return p[:, 1].astype(np.float32)
    top = np.sort(p, axis=1)
    return (top[:, -1] - top[:, -2]).astype(np.float32) if p.shape[1] > 1 else top[:, -1]


def _groups(db: Database, lab_ids: np.ndarray, column: str) -> np.ndarray:
    """The ``column`` metadata value of each labeled image; every one must have it."""
    values = db.images.metadata_values(column)
    lacking = [int(i) for i in lab_ids if int(i) not in values]
    if lacking:
        raise BadInput(
            f"--group-by {column}: {len(lacking)} of {len(lab_ids)} labeled images have no "
            f"{column!r} in their metadata (first: image {lacking[0]}); add it with "
            "`vecstore ingest DIR --metadata FILE.csv`"
        )
    return np.array([str(values[int(i)]) for i in lab_ids])


def latest_params(db: Database, space: str) -> PropagationParams:
    """The parameters (method included) of the space's latest propagation (the defaults
    when there is none), so that the score is about them."""
    last = db.runs.latest("propagate", space)
    p = last.params if last is not None else {}
    d = PropagationParams()
    return PropagationParams(
        p.get("n_neighbors", d.n_neighbors),
        p.get("alpha", d.alpha),
        p.get("gamma", d.gamma),
        p.get("method", d.method),
    )
