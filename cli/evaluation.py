"""`vecstore evaluate`: how good the pseudo-labels are, the costly error first (hold-out, truth
file, recall promise, learning curve)."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

import click

from vecstore.params import EvaluationParams

from .context import Ctx
from .options import (
    build,
    output_option,
    run_option,
    seed_option,
    space_option,
    truth_option,
)
from .output import emit_json, random_weights_note, table

if TYPE_CHECKING:  # pragma: no cover
    from vecstore.results import Evaluation, LearningCurve

SHOWN_THRESHOLDS = (0.0, 0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@click.command()
@space_option()
@truth_option(
    "CSV (path or sha256, label) of true labels: score the latest propagation against it."
)
@run_option("The propagation run to score (with --truth).")
@click.option("--positive", default=None, help="The class whose misses cost most (e.g. cancer).")
@click.option(
    "--target-recall",
    type=float,
    default=EvaluationParams.target_recall,
    show_default=True,
    help="Recall of --positive to reach, in (0, 1].",
)
@click.option(
    "--target-accuracy",
    type=float,
    default=EvaluationParams.target_accuracy,
    show_default=True,
    help="Accuracy that pseudo-labels not flagged needs_review should reach.",
)
@click.option(
    "--test-size",
    type=float,
    default=EvaluationParams.test_size,
    show_default=True,
    help="Share of the expert labels hidden in each hold-out repeat.",
)
@click.option("--repeats", type=int, default=EvaluationParams.repeats, show_default=True)
@click.option(
    "--folds",
    type=int,
    default=EvaluationParams.folds,
    show_default=True,
    help="With --positive: cross-fitting folds that score every expert label once.",
)
@click.option(
    "--confidence",
    type=float,
    default=EvaluationParams.confidence,
    show_default=True,
    help="With --positive: probability that the promised recall holds on the unlabeled images.",
)
@click.option(
    "--group-by",
    metavar="COLUMN",
    default=None,
    help="With --positive: a metadata column (e.g. patient_id) whose groups the folds keep "
    "whole, so that no patient is both seen and scored.",
)
@seed_option(EvaluationParams.seed)
@click.option("--compare", is_flag=True, help="Evaluate every space (hold-out) side by side.")
@click.option(
    "--curve",
    is_flag=True,
    help="Accuracy (and recall of --positive) against the "
    "number of labels, fitted a - b m^-c for `vecstore plan`.",
)
@click.option(
    "--sizes",
    default=None,
    metavar="M,M,...",
    help="Label counts for --curve "
    "(default: 8 from one per class to four fifths of the known labels).",
)
@output_option(csv=False)
@click.pass_obj
def evaluate(
    obj: Ctx,
    space,
    truth,
    run_id,
    positive,
    target_recall,
    target_accuracy,
    test_size,
    repeats,
    folds,
    confidence,
    group_by,
    seed,
    compare,
    curve,
    sizes,
    fmt,
) -> None:
    """How good are the pseudo-labels? The costly error first.

    Without --truth: repeated stratified hold-out of the expert labels (hide a share,
    propagate from the rest, score the hidden). With --truth FILE.csv: score the latest
    propagation. Accuracy, balanced accuracy, per-class precision/recall/F1, confusion matrix;
    with --positive: recall, precision, F2, ROC-AUC, and the recall promise: the threshold
    on p(positive) whose recall reaches --target-recall with probability --confidence, from
    every expert label scored out-of-fold (or why there are too few positives for it). Also
    accuracy and coverage by confidence, and the needs_review threshold.

    \b
    Examples:
      vecstore evaluate --space pixels --truth truth.csv
      vecstore evaluate --positive cancer --target-recall 0.95
    """
    if compare and (truth or run_id):
        raise click.BadParameter(
            "--compare uses the hold-out; drop --truth/--run", param_hint="--compare"
        )
    params = build(
        EvaluationParams,
        positive=positive,
        target_recall=target_recall,
        target_accuracy=target_accuracy,
        test_size=test_size,
        repeats=repeats,
        folds=folds,
        confidence=confidence,
        group_by=group_by,
        seed=seed,
    )
    if curve:
        _learning_curve(obj, space, truth, _sizes(sizes), params, fmt)
        return
    with obj.open(write=True) as store:
        names = [s.name for s in store.spaces()] if compare else [space]
        results = [store.evaluate(n, params, truth=truth, run_id=run_id) for n in names]
    if fmt == "json":
        emit_json(r.to_dict() for r in results)
    elif compare:
        _print_comparison(results)
    else:
        _print_evaluation(results[0])


def _sizes(value: str | None) -> list[int] | None:
    try:
        return [int(v) for v in value.split(",")] if value else None
    except ValueError:
        raise click.BadParameter(
            "a comma-separated list of label counts, e.g. 10,20,50", param_hint="--sizes"
        ) from None


def _learning_curve(
    obj: Ctx,
    space: str | None,
    truth: str | None,
    sizes: list[int] | None,
    params: EvaluationParams,
    fmt: str,
) -> None:
    with obj.open(write=True) as store:
        r = store.learning_curve(
            space,
            truth=truth,
            sizes=sizes,
            repeats=params.repeats,
            seed=params.seed,
            positive=params.positive,
        )
    if fmt == "json":
        emit_json([r.to_dict()])
        return
    _print_curve(r)


def _print_curve(r: LearningCurve) -> None:
    click.echo(
        f"space {r.space}: learning curve from {r.known} known labels ({r.source}), "
        f"{r.repeats} draws per size, scored on the labels not drawn"
    )
    cols = ["labels", "per_class", "accuracy", "accuracy_std"]
    cols += ["recall", "recall_std"] if r.positive else []
    click.echo(table([asdict(p) for p in r.points], cols))
    f = r.fit
    if f:
        click.echo(
            f"fit: accuracy(m) = {f.a:.4f} - {f.b:.4f} * m^-{f.c:.4f} (rmse {f.rmse:.4f}); "
            f"run {r.run_id} is what `vecstore plan` extrapolates"
        )
    random_weights_note(r.space, r.weights_random)


def _print_comparison(results: list[Evaluation]) -> None:
    rows = []
    for r in results:
        pos = r.scores.positive
        rows.append(
            {
                "space": r.space,
                "accuracy": r.scores.accuracy,
                "balanced_accuracy": r.scores.balanced_accuracy,
                "std": getattr(r.details, "accuracy_std", None),
                "recall_pos": pos.recall if pos else None,
                "f2_pos": pos.f2 if pos else None,
                "review_below": r.review_below,
            }
        )
    click.echo(
        table(
            rows,
            [
                "space",
                "accuracy",
                "std",
                "balanced_accuracy",
                "recall_pos",
                "f2_pos",
                "review_below",
            ],
        )
    )


def _print_evaluation(r: Evaluation) -> None:
    d, s = r.details, r.scores
    if r.mode == "truth":
        how = f"against the truth file ({d.scored} images, propagation run {d.propagation_run})"
    else:
        how = (
            f"hold-out of the expert labels ({d.repeats} repeats, {d.hidden_per_repeat} hidden "
            f"each, accuracy {d.accuracy_mean:.3f} +/- {d.accuracy_std:.3f})"
        )
    click.echo(f"space {r.space}: {how}")
    click.echo(f"accuracy {s.accuracy:.4f}  balanced accuracy {s.balanced_accuracy:.4f}")
    click.echo(
        table([asdict(c) for c in s.per_class], ["label", "precision", "recall", "f1", "support"])
    )
    _print_positive(s.positive)
    if s.positive is not None:
        _print_promise(r.recall_promise, s.positive.label)
    labels = s.confusion_labels
    click.echo("confusion matrix (rows: truth, columns: predicted):")
    click.echo(
        table(
            [
                {"truth": t, **{str(c): v for c, v in zip(labels, row)}}
                for t, row in zip(labels, s.confusion)
            ],
            ["truth", *map(str, labels)],
        )
    )
    click.echo("accuracy and coverage by confidence threshold:")
    click.echo(
        table(
            [asdict(c) for c in r.coverage_curve if c.threshold in SHOWN_THRESHOLDS],
            ["threshold", "coverage", "accuracy"],
        )
    )
    _print_review_threshold(r)
    random_weights_note(r.space, r.weights_random)


def _print_positive(pos) -> None:
    if pos is None:
        return
    line = (
        f"positive class {pos.label!r}: recall {pos.recall:.4f}, precision "
        f"{pos.precision:.4f}, F2 {pos.f2:.4f}, missed {pos.missed}"
    )
    if pos.roc_auc is not None:
        line += f", ROC-AUC {pos.roc_auc:.4f}"
    click.echo(line)
    thr = pos.threshold_for_target_recall
    if thr:
        click.echo(
            f"  to reach recall {pos.target_recall:.2f}: call {pos.label!r} when "
            f"p({pos.label}) >= {thr.threshold:.4f} (recall {thr.recall:.4f}, "
            f"precision {thr.precision:.4f})"
        )


def _print_promise(pr, positive: str) -> None:
    if pr is None:
        return
    if pr.declined:
        more = pr.positives_needed - pr.positives
        click.echo(
            f"no recall promise: {pr.positives} expert labels {positive!r} are too few to "
            f"promise recall {pr.target:.2f} with probability {pr.confidence:.2f} (at most "
            f"{pr.holds_with:.2f}); label at least {more} more {positive!r} images "
            f"({pr.positives_needed} needed)"
        )
        return
    click.echo(
        f"recall promise: call {positive!r} when p({positive}) >= {pr.threshold:.4f}: recall "
        f">= {pr.target:.2f} with probability {pr.holds_with:.3f} (>= {pr.confidence:.2f}), "
        f"from {pr.positives} out-of-fold {positive!r} scores"
    )


def _print_review_threshold(r: Evaluation) -> None:
    if r.review_below is None:
        click.echo(
            f"no confidence threshold reaches {r.target_accuracy:.2f} accuracy: review everything"
        )
        return
    nf = r.not_flagged
    acc = nf.accuracy if nf and nf.accuracy is not None else float("nan")
    click.echo(
        f"recommended: needs_review below confidence {r.review_below:.2f} (pseudo-labels "
        f"above it: {acc:.4f} accurate, {nf.coverage if nf else 0:.1%} of the images; "
        f"target {r.target_accuracy:.2f})"
    )
