"""How good the pseudo-labels are, the costly error first, as a recorded run.

Without a truth file every expert label is scored out-of-fold (vecstore.labeling.crossfit),
the estimate resting on the labels vecstore did not pick (folder, import) and the actively
chosen ones (suggested, review) reported apart; with a truth file, a propagation run's
predictions are scored against it. With a positive class the out-of-fold p(positive) of the
labeled positives sets a recall threshold that holds at a stated confidence
(vecstore.learn.guarantee), or declines it. Either way the review flag is calibrated: the
share of least sure pseudo-labels to flag for the rest to reach the target accuracy
(vecstore.learn.review)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import BadInput, NoRun
from ..learn.guarantee import RecallPromise, recall_promise
from ..learn.metrics import classification_metrics
from ..learn.review import calibrate_review, decision_margin, rank_within
from ..params import EvaluationParams, PropagationParams
from ..results import ChosenScore, Evaluation, HoldoutDetails, TruthDetails
from .crossfit import Experts, OutOfFold, cross_fit, latest_params
from .labels import classes as store_classes

if TYPE_CHECKING:  # pragma: no cover
    from ..db import Database
    from ..db.models import Run, Space


@dataclass
class Rule:
    """How a distribution becomes a label: the most probable class, or for two classes with
    a recall promise, the positive class when p(positive) >= threshold."""

    pos_j: int | None = None
    threshold: float | None = None

    @classmethod
    def of(cls, promise: RecallPromise | None, classes: list[str], positive: str | None) -> Rule:
        if promise is None or promise.declined or len(classes) != 2 or positive not in classes:
            return cls()
        return cls(classes.index(positive), promise.threshold)

    def apply(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(decided class index, margin to the decision) per row; see learn.review."""
        return decision_margin(p, self.pos_j, self.threshold)

    def margins_of(self, pool: np.ndarray, two: bool) -> np.ndarray:
        """Margins of a fit's pseudo-labels from their ``OutOfFold.pool`` summary."""
        if not two:
            return pool
        p1 = pool.astype(np.float64)
        return self.apply(np.column_stack([1 - p1, p1]))[1]


@dataclass
class _Scored:
    """Decisions next to what they should be, with each one's margin rank among the
    pseudo-labels of its propagation (for the review flag)."""

    y_true: list[str]
    y_pred: list[str | None]
    rank: np.ndarray
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
    """Score against ``truth`` (the latest or given propagation run of the space), or
    out-of-fold with ``propagation`` (default: the parameters of the space's latest run)."""
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
        prop_params = propagation or latest_params(db, sp.name)
        oof = None
        if prop is None or params.positive:
            oof = cross_fit(db, Experts.load(db, sp), known, params, prop_params)
        promise = _promise(oof, known, params)
        rule = Rule.of(promise, known, params.positive)
        if prop is not None:
            scored = _score_run(db, sp, prop, truth, rule)
        else:
            scored = _score_oof(oof, sp, params, prop_params, rule)
        result = _summarise(run.id, scored, params)
        result.recall_promise = promise
        run.stats = result.to_dict()
    return result


def _propagation_run(db: Database, sp: Space, run_id: int | None) -> Run:
    """Propagation run ``run_id``, else the latest of the space."""
    run = db.runs.get(run_id, "propagate") if run_id else db.runs.latest("propagate", sp.name)
    if run is None:
        raise NoRun(
            f"no propagation run for space {sp.name!r} yet: run "
            f"`vecstore propagate --space {sp.name}`"
        )
    return run


def _promise(
    oof: OutOfFold | None, classes: list[str], params: EvaluationParams
) -> RecallPromise | None:
    """The recall promise for ``params.positive`` from the out-of-fold p(positive) of the
    labeled positives; None without a positive class or for a target recall of 1."""
    if oof is None or params.positive is None or params.target_recall >= 1:
        return None
    pos = oof.proba[oof.labels == params.positive, classes.index(params.positive)]
    return recall_promise(pos, params.target_recall, params.confidence)


def _score_run(db: Database, sp: Space, run: Run, truth: dict[int, str], rule: Rule) -> _Scored:
    """The decisions of a propagation run for the unlabeled images the truth file names."""
    classes = run.stats["classes"]
    seeds = db.labels.all()
    preds = db.outputs.predictions(run.id)
    pool = [p for i, p in preds.items() if i not in seeds]
    at = np.array([p.image_id in truth for p in pool], dtype=bool)
    scored = [p for p, t in zip(pool, at) if t]
    if not scored:
        raise BadInput("no unlabeled image of the propagation run appears in the truth file")
    unknown = sorted({truth[p.image_id] for p in scored} - set(classes))
    if unknown:
        raise BadInput(f"truth labels {unknown} are not classes of the propagation ({classes})")
    pool_proba = np.stack([np.frombuffer(p.distribution, np.float32) for p in pool])
    decided, margin = rule.apply(pool_proba)  # every pseudo-label once: ranks need them all
    return _Scored(
        y_true=[truth[p.image_id] for p in scored],
        y_pred=[classes[d] if d >= 0 else None for d in decided[at]],
        rank=rank_within(margin[at], margin),
        proba=pool_proba[at],
        classes=classes,
        details=TruthDetails(run.id, len(scored)),
        space=sp,
    )


def _score_oof(
    oof: OutOfFold, sp: Space, params: EvaluationParams, prop: PropagationParams, rule: Rule
) -> _Scored:
    """The out-of-fold decisions of the fairly chosen labels (all of them when too few of
    each class were), the actively chosen ones scored apart in the details."""
    decided, margin = rule.apply(oof.proba)
    pred = np.array([oof.classes[d] if d >= 0 else None for d in decided], dtype=object)
    correct = pred == oof.labels
    two = len(oof.classes) == 2
    rank = np.empty(len(margin))
    for f, pool in enumerate(oof.pool):
        at = oof.fold == f
        rank[at] = rank_within(margin[at], rule.margins_of(pool, two))
    use = oof.scored()
    per_fold = [float(correct[use & (oof.fold == f)].mean()) for f in range(len(oof.pool))]
    per_fold = [a for a in per_fold if a == a]  # a fold may hold no fair label
    details = HoldoutDetails(
        folds=len(oof.pool),
        grouped_by=oof.groups,
        method=prop.method,
        n_neighbors=prop.n_neighbors,
        alpha=prop.alpha,
        gamma=prop.gamma,
        scored=int(use.sum()),
        scored_on="labels vecstore did not pick" if not use.all() else "every expert label",
        accuracy_per_fold=per_fold,
        accuracy_mean=float(np.mean(per_fold)),
        accuracy_std=float(np.std(per_fold)),
        by_chosen=_by_chosen(oof, correct),
    )
    return _Scored(
        list(oof.labels[use]), list(pred[use]), rank[use], oof.proba[use], oof.classes,
        details, sp,
    )  # fmt: skip


def _by_chosen(oof: OutOfFold, correct: np.ndarray) -> list[ChosenScore]:
    """Out-of-fold accuracy per way the labels were chosen (folder, import, suggested...)."""
    how = np.array([c or "unrecorded" for c in oof.chosen], dtype=object)
    return [
        ChosenScore(str(c), int((how == c).sum()), float(correct[how == c].mean()))
        for c in sorted(set(how))
    ]


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
    return Evaluation(
        run_id=run_id,
        space=s.space.name,
        mode="truth" if isinstance(s.details, TruthDetails) else "holdout",
        details=s.details,
        scores=scores,
        review=calibrate_review(s.rank, correct, params.target_accuracy),
        weights_random=s.space.weights_random,
    )
