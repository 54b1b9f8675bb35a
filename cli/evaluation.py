"""`vecstore evaluate`: how good the pseudo-labels are, the costly error first (out-of-fold or
against a truth file, recall promise, review flag, methods compared, learning curve)."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

import click

from vecstore.params import METHOD_METRICS, EvaluationParams

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

SHOWN_SHARES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)  # rows of the review curve printed


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
    "--repeats",
    type=int,
    default=EvaluationParams.repeats,
    show_default=True,
    help="With --curve: draws of each label count.",
)
@click.option(
    "--folds",
    type=int,
    default=EvaluationParams.folds,
    show_default=True,
    help="Cross-fitting folds: each expert label is scored once, by a fit on the others.",
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
    help="A metadata column (e.g. patient_id) whose groups the folds keep whole, so that no "
    "patient is both seen and scored.",
)
@seed_option(EvaluationParams.seed)
@click.option("--compare", is_flag=True, help="Evaluate every space (out-of-fold) side by side.")
@click.option(
    "--compare-methods",
    is_flag=True,
    help="Score every labeling method on the same folds (mean +/- std over the folds).",
)
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
    repeats,
    folds,
    confidence,
    group_by,
    seed,
    compare,
    compare_methods,
    curve,
    sizes,
    fmt,
) -> None:
    """How good are the pseudo-labels? The costly error first.

    Without --truth: every expert label scored out-of-fold (K folds, each predicted by the
    space's latest method fitted on the other folds), on the labels vecstore did not pick
    (folder, import; suggested and reviewed ones are reported apart). With --truth FILE.csv:
    score the latest propagation. Accuracy, balanced accuracy, per-class precision/recall/F1,
    confusion matrix; with --positive: recall, precision, F2, ROC-AUC, and the recall
    promise: the threshold on p(positive) whose recall reaches --target-recall with
    probability --confidence (or how many more positive labels it needs). Also the review
    flag: the share of least sure pseudo-labels to flag so that the others reach
    --target-accuracy.

    \b
    Examples:
      vecstore evaluate --space pixels --truth truth.csv
      vecstore evaluate --positive cancer --target-recall 0.95
      vecstore evaluate --positive cancer --compare-methods
    """
    if (compare or compare_methods) and (truth or run_id):
        raise click.BadParameter(
            "--compare and --compare-methods score out-of-fold; drop --truth/--run",
            param_hint="--compare",
        )
    params = build(
        EvaluationParams,
        positive=positive,
        target_recall=target_recall,
        target_accuracy=target_accuracy,
        repeats=repeats,
        folds=folds,
        confidence=confidence,
        group_by=group_by,
        seed=seed,
    )
    if curve:
        _learning_curve(obj, space, truth, _sizes(sizes), params, fmt)
        return
    if compare_methods:
        _compare_methods(obj, space, params, fmt)
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
                "flag_share": r.review.flag_share,
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
                "flag_share",
            ],
        )
    )


def _print_evaluation(r: Evaluation) -> None:
    d, s = r.details, r.scores
    click.echo(f"space {r.space}: {_how(r)}")
    for c in getattr(d, "by_chosen", []):
        click.echo(
            f"  labels chosen by {c.chosen}: {c.labels}, out-of-fold accuracy {c.accuracy:.4f}"
        )
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
    _print_review(r)
    random_weights_note(r.space, r.weights_random)


def _how(r: Evaluation) -> str:
    """What the scores rest on, in a line."""
    d = r.details
    if r.mode == "truth":
        return f"against the truth file ({d.scored} images, propagation run {d.propagation_run})"
    grouped = f", kept whole by {d.grouped_by}" if d.grouped_by else ""
    return (
        f"{d.method} scored out-of-fold ({d.folds} folds{grouped}) on {d.scored} {d.scored_on}, "
        f"accuracy {d.accuracy_mean:.3f} +/- {d.accuracy_std:.3f} over the folds"
    )


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


def _print_review(r: Evaluation) -> None:
    rv = r.review
    click.echo(
        f"expected accuracy of the pseudo-labels not flagged, by share flagged (least sure "
        f"first, calibrated on {rv.scored} scored labels):"
    )
    rows = [{"flagged": f, "accuracy_of_rest": a} for f, a in rv.curve if f in SHOWN_SHARES]
    click.echo(table(rows, ["flagged", "accuracy_of_rest"]))
    if rv.flag_share is None:
        click.echo(
            f"no share short of all reaches accuracy {rv.target:.2f}: export flags every "
            "pseudo-label for review"
        )
        return
    click.echo(
        f"review flag: the {100 * rv.flag_share:.0f} % least sure pseudo-labels; the others "
        f"are expected {rv.expected_accuracy:.4f} accurate (target {rv.target:.2f}); "
        "`vecstore export` applies it"
    )


def _compare_methods(obj: Ctx, space: str | None, params: EvaluationParams, fmt: str) -> None:
    with obj.open(write=True) as store:
        cmp = store.compare_methods(space, params)
    if fmt == "json":
        emit_json([cmp.to_dict()])
        return
    pos = f", positive class {cmp.positive!r}" if cmp.positive else ""
    click.echo(
        f"space {cmp.space}: methods scored out-of-fold on the same {cmp.folds} folds of "
        f"{cmp.labels} expert labels{pos} (mean +/- std over the folds)"
    )
    cols = [m for m in METHOD_METRICS if any(row.mean[m] is not None for row in cmp.rows)]
    rows = [
        {"method": row.method, **{m: _pm(row.mean[m], row.std[m]) for m in cols}}
        for row in cmp.rows
    ]
    click.echo(table(rows, ["method", *cols]))
    click.echo(f"best by {cmp.criterion}: {cmp.best} (`vecstore propagate --method {cmp.best}`)")


def _pm(mean: float | None, std: float | None) -> str:
    return "" if mean is None else f"{mean:.3f} +/- {std:.3f}"
