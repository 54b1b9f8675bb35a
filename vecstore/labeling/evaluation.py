"""How good the pseudo-labels are, the costly error first, as a recorded run: against a
truth file (a propagation run's predictions scored), or by repeated stratified hold-out of
the expert labels (hide some, propagate from the rest, score the hidden). With a positive
class, every expert label is also scored out-of-fold (cross-fitting) to set a recall threshold
that holds at a stated confidence (vecstore.learn.guarantee), or to decline it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import BadInput, NoRun
from ..learn.guarantee import RecallPromise, recall_promise
from ..learn.metrics import classification_metrics, coverage_curve, recommend_review_threshold
from ..learn.splits import cross_fit_folds, stratified_holdout
from ..params import EvaluationParams, PropagationParams
from ..results import Coverage, Evaluation, HoldoutDetails, TruthDetails
from .data import space_matrix
from .labels import classes as store_classes
from .propagation import spread

if TYPE_CHECKING:  # pragma: no cover
    from ..db import Database
    from ..db.models import Run, Space


@dataclass
class _Scored:
    """Predictions next to what they should be, for the images scored."""

    y_true: list[str]
    y_pred: list[str | None]
    confidence: np.ndarray
    proba: np.ndarray  # (n, classes)
    classes: list[str]
    details: HoldoutDetails | TruthDetails
    space: Space


def evaluate(
    db: Database,
    space: str | None,
    params: EvaluationParams,
    *,
    truth: dict[int, str] | None = None,
    run_id: int | None = None,
    propagation: PropagationParams | None = None,
) -> Evaluation:
    """Score against ``truth`` (the latest or given propagation run of the space), or by
    hold-out with ``propagation`` (default: the parameters of the space's latest run)."""
    sp = db.spaces.get(space)
    known = store_classes(db)
    if params.positive is not None and params.positive not in known:
        raise BadInput(
            f"--positive {params.positive!r} is not a label of this store "
            f"({', '.join(known) or 'none'})"
        )
    prop = None
    if truth is not None:  # the evaluation belongs to the space of the run it scores
        prop = _propagation_run(db, sp, run_id)
        sp = db.spaces.get(prop.space)
    mode = "truth" if truth is not None else "holdout"
    with db.runs.record("evaluate", sp.name, params.run_params(mode)) as run:
        # the space's vectors and expert labels, read once for the hold-out and the promise
        experts = _Experts.load(db, sp) if prop is None or params.positive else None
        prop_params = propagation or _latest_params(db, sp.name)
        if prop is not None:
            scored = _score_run(db, sp, prop, truth)
        else:
            scored = _score_holdout(experts, sp, known, params, prop_params)
        result = _summarise(run.id, scored, params)
        result.recall_promise = _promise(db, experts, known, params, prop_params)
        run.stats = result.to_dict()
    return result


@dataclass
class _Experts:
    """A space's vectors with the rows of its expert-labeled images."""

    ids: np.ndarray
    x: np.ndarray
    row_of: dict[int, int]
    lab_ids: np.ndarray  # the labeled images with a vector, by id
    labels: np.ndarray  # their labels

    @classmethod
    def load(cls, db: Database, sp: Space) -> _Experts:
        seeds = db.labels.all()
        _, ids, x = space_matrix(db, sp.name)
        row_of = {int(i): r for r, i in enumerate(ids)}
        lab_ids = np.array(sorted(i for i in seeds if i in row_of))
        labels = np.array([seeds[i] for i in lab_ids], dtype=object)
        return cls(ids, x, row_of, lab_ids, labels)

    def predict(self, train, test, classes: list[str], prop: PropagationParams):
        """Propagate from the labels of rows ``train``; the class probabilities (``classes``
        order) of rows ``test``, and the fitted propagation."""
        kept = {int(self.lab_ids[j]): self.labels[j] for j in train}
        rows = [self.row_of[int(self.lab_ids[j])] for j in test]
        cls, lp = spread(self.x, self.ids, kept, prop)
        p = np.zeros((len(rows), len(classes)))
        for cj, c in enumerate(cls):
            p[:, classes.index(c)] = lp.label_distributions_[rows, cj]
        return p, lp.confidence_[rows]


def _propagation_run(db: Database, sp: Space, run_id: int | None) -> Run:
    """Propagation run ``run_id``, else the latest of the space."""
    run = db.runs.get(run_id, "propagate") if run_id else db.runs.latest("propagate", sp.name)
    if run is None:
        raise NoRun(
            f"no propagation run for space {sp.name!r} yet: run "
            f"`vecstore propagate --space {sp.name}`"
        )
    return run


def _score_run(db: Database, sp: Space, run: Run, truth: dict[int, str]) -> _Scored:
    """The predictions of a propagation run for the unlabeled images the truth file names."""
    classes = run.stats["classes"]
    seeds = db.labels.all()
    preds = db.outputs.predictions(run.id)
    scored = [p for i, p in preds.items() if i in truth and i not in seeds]
    if not scored:
        raise BadInput("no unlabeled image of the propagation run appears in the truth file")
    unknown = sorted({truth[p.image_id] for p in scored} - set(classes))
    if unknown:
        raise BadInput(f"truth labels {unknown} are not classes of the propagation ({classes})")
    return _Scored(
        y_true=[truth[p.image_id] for p in scored],
        y_pred=[p.label for p in scored],
        confidence=np.array([p.confidence for p in scored]),
        proba=np.stack([np.frombuffer(p.distribution, np.float32) for p in scored]),
        classes=classes,
        details=TruthDetails(run.id, len(scored)),
        space=sp,
    )


def _score_holdout(
    experts: _Experts,
    sp: Space,
    classes: list[str],
    params: EvaluationParams,
    prop: PropagationParams,
) -> _Scored:
    """Hide a share of the expert labels, propagate from the rest, score the hidden ones;
    ``params.repeats`` times."""
    labels = experts.labels
    if len(labels) < 2 * max(len(classes), 1) or min(Counter(labels).values()) < 2:
        raise BadInput(
            "hold-out evaluation needs at least 2 expert labels per class (one to keep, one "
            "to hide); add labels or give --truth FILE.csv"
        )
    y_true, y_pred, conf, proba, accs = [], [], [], [], []
    for train, test in stratified_holdout(labels, params.test_size, params.repeats, params.seed):
        p, confidence = experts.predict(train, test, classes, prop)
        pred = [classes[r.argmax()] if r.sum() > 0 else None for r in p]
        truth = [labels[j] for j in test]
        accs.append(float(np.mean([a == b for a, b in zip(truth, pred)])))
        y_true += truth
        y_pred += pred
        conf.append(confidence)
        proba.append(p)
    details = HoldoutDetails(
        repeats=params.repeats,
        test_size=params.test_size,
        n_neighbors=prop.n_neighbors,
        alpha=prop.alpha,
        gamma=prop.gamma,
        hidden_per_repeat=len(y_true) // params.repeats,
        accuracy_per_repeat=accs,
        accuracy_mean=float(np.mean(accs)),
        accuracy_std=float(np.std(accs)),
    )
    return _Scored(
        y_true, y_pred, np.concatenate(conf), np.concatenate(proba), classes, details, sp
    )


def _promise(
    db: Database,
    experts: _Experts | None,
    classes: list[str],
    params: EvaluationParams,
    prop: PropagationParams,
) -> RecallPromise | None:
    """The recall promise for ``params.positive`` from the out-of-fold p(positive) of the
    labeled positives; None without a positive class or for a target recall of 1."""
    if experts is None or params.positive is None or params.target_recall >= 1:
        return None
    labels, proba = out_of_fold(db, experts, classes, params, prop)
    pos = proba[labels == params.positive, classes.index(params.positive)]
    return recall_promise(pos, params.target_recall, params.confidence)


def out_of_fold(
    db: Database,
    experts: _Experts,
    classes: list[str],
    params: EvaluationParams,
    prop: PropagationParams,
) -> tuple[np.ndarray, np.ndarray]:
    """(expert labels, class probabilities) with each expert label predicted once, by a
    propagation from the labels of the other folds (stratified K-fold, ``params.folds``;
    grouped by the metadata column ``params.group_by`` when given)."""
    labels = experts.labels
    if min(Counter(labels).values()) < 2:
        raise BadInput("a recall promise needs at least 2 expert labels of every class")
    groups = _groups(db, experts.lab_ids, params.group_by) if params.group_by else None
    proba = np.zeros((len(labels), len(classes)))
    for train, test in cross_fit_folds(labels, params.folds, params.seed, groups):
        proba[test], _ = experts.predict(train, test, classes, prop)
    return labels, proba


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


def _latest_params(db: Database, space: str) -> PropagationParams:
    """The parameters of the space's latest propagation (the defaults when there is none),
    so that the score is about them."""
    last = db.runs.latest("propagate", space)
    p = last.params if last is not None else {}
    d = PropagationParams()
    return PropagationParams(
        p.get("n_neighbors", d.n_neighbors), p.get("alpha", d.alpha), p.get("gamma", d.gamma)
    )


def _summarise(run_id: int, s: _Scored, params: EvaluationParams) -> Evaluation:
    try:
        scores = classification_metrics(
            s.y_true,
            s.y_pred,
            classes=list(s.classes),
            proba=s.proba,
            positive=params.positive,
            target_recall=params.target_recall,
        )
    except ValueError as exc:
        raise BadInput(str(exc)) from exc
    correct = np.array([t == p for t, p in zip(s.y_true, s.y_pred)])
    curve = coverage_curve(correct, s.confidence)
    recommended = recommend_review_threshold(curve, params.target_accuracy)
    not_flagged = None
    if recommended is not None:
        kept = s.confidence >= recommended
        not_flagged = Coverage(
            float(kept.mean()), float(correct[kept].mean()) if kept.any() else None
        )
    return Evaluation(
        run_id=run_id,
        space=s.space.name,
        mode="truth" if isinstance(s.details, TruthDetails) else "holdout",
        details=s.details,
        scores=scores,
        coverage_curve=curve,
        target_accuracy=params.target_accuracy,
        review_below=recommended,
        not_flagged=not_flagged,
        weights_random=s.space.weights_random,
    )
