"""Labeling: `vecstore cluster`, `propagate`, `evaluate`, `export`, `suggest`."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import click

from vecstore.params import ClusterParams, EvaluationParams, ExportOptions, PropagationParams

from .context import Ctx
from .options import (
    build,
    output_file_option,
    output_option,
    parse_k_range,
    propagation_options,
    run_option,
    seed_option,
    space_option,
    truth_option,
)
from .output import data_on_stdout, emit_json, emit_rows, random_weights_note, table, where

if TYPE_CHECKING:  # pragma: no cover
    from vecstore.results import Clustering, Evaluation, LearningCurve, Propagation

METRIC_COLS = [
    "ami",
    "ari",
    "homogeneity",
    "completeness",
    "v_measure",
    "purity",
    "entropy",
    "silhouette",
]
SHOWN_THRESHOLDS = (0.0, 0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@click.command()
@space_option()
@click.option("-k", "k", type=int, default=None, help="Number of clusters (2 or more).")
@click.option(
    "--k-range",
    callback=parse_k_range,
    default=None,
    metavar="LO..HI",
    help="Choose k by silhouette (cosine, on a sample) in this range (default 2..20 "
    "when -k is not given).",
)
@click.option(
    "--method",
    type=click.Choice(["kmeans", "spectral"]),
    default=ClusterParams.method,
    show_default=True,
    help="FAISS k-means, or FAISS k-means on the eigenvectors of the normalised k-NN graph.",
)
@click.option(
    "--neighbors",
    type=int,
    default=ClusterParams.n_neighbors,
    show_default=True,
    help="k of the k-NN graph (spectral).",
)
@click.option(
    "--n-init", type=int, default=ClusterParams.n_init, show_default=True, help="k-means restarts."
)
@seed_option(ClusterParams.seed)
@truth_option("Score against this CSV (path, label) instead of the expert labels.")
@click.option("--compare", is_flag=True, help="Cluster every space and print one table.")
@output_option()
@click.pass_obj
def cluster(
    obj: Ctx, space, k, k_range, method, neighbors, n_init, seed, truth, compare, fmt
) -> None:
    """Cluster a space and score the clusters against the known labels.

    Reports AMI, ARI, homogeneity, completeness, V-measure, purity, cluster entropy (against
    the expert labels, or --truth) and the cosine silhouette. Each clustering is a stored run.

    \b
    Examples:
      vecstore cluster --space pixels -k 10
      vecstore cluster --space pixels -k 10 --method spectral
      vecstore cluster --compare -k 10
    """
    params = build(
        ClusterParams,
        k=k,
        k_range=k_range,
        method=method,
        n_neighbors=neighbors,
        n_init=n_init,
        seed=seed,
    )
    with obj.open(write=True) as store:
        names = [s.name for s in store.spaces()] if compare else [space]
        results = [store.cluster(n, params, truth=truth) for n in names]
    if fmt == "json":
        emit_json(r.to_dict() for r in results)
        return
    rows = [
        {
            "space": r.space,
            "method": r.method,
            "k": r.k,
            "run": r.run_id,
            **{m: r.metrics.get(m) for m in METRIC_COLS},
        }
        for r in results
    ]
    if fmt == "csv":
        emit_rows(rows, ["space", "method", "k", "run", *METRIC_COLS], fmt)
        return
    click.echo(f"scored against {results[0].scored_against} ({results[0].n_scored} images)")
    click.echo(table(rows, ["space", "method", "k", "run", *METRIC_COLS]))
    for r in results:
        _print_silhouettes(r)
        random_weights_note(r.space, r.weights_random)


def _print_silhouettes(r: Clustering) -> None:
    if r.silhouette_by_k:
        scores = ", ".join(f"{kk}:{v:.3f}" for kk, v in r.silhouette_by_k.items())
        click.echo(f"{r.space}: k chosen by silhouette: {scores}")


@click.command()
@space_option()
@propagation_options
@output_option(csv=False)
@click.pass_obj
def propagate(obj: Ctx, space, neighbors, alpha, fmt) -> None:
    """Spread the expert labels to the other images over the k-NN graph of a space.

    Each image gets a pseudo-label, a confidence (1 - entropy/log C), the runner-up label and
    the margin; expert labels are never overwritten. The run and its parameters are stored.

    \b
    Example:
      vecstore propagate --space pixels -k 5
    """
    params = build(PropagationParams, n_neighbors=neighbors, alpha=alpha)
    with obj.open(write=True) as store:
        r = store.propagate(space, params, progress=fmt == "table")
    if fmt == "json":
        emit_json([r.to_dict()])
        return
    _print_propagation(r)


def _print_propagation(r: Propagation) -> None:
    if r.mean_confidence is None:
        click.echo(
            f"run {r.run_id}: space {r.space}: every image has an expert label: nothing to "
            "spread (the export holds the expert labels)"
        )
        return
    click.echo(
        f"run {r.run_id}: space {r.space}, {r.seeds} expert labels spread to "
        f"{r.propagated} images (mean confidence {r.mean_confidence:.3f})"
    )
    counts = sorted(r.counts.items(), key=lambda kv: str(kv[0]))
    click.echo(table([{"label": k, "count": v} for k, v in counts], ["label", "count"]))
    if r.unreached and r.health is None:
        click.echo(
            f"{r.unreached} images are not connected to any expert label in the graph: "
            "labeled by a vote of their nearest neighbours and flagged for review"
        )
    for w in r.health.warnings if r.health else []:
        click.echo(_health_warning(w))
    random_weights_note(r.space, r.weights_random)


def _health_warning(w) -> str:
    """One line for a weakness of the k-NN graph (a ``HealthWarning`` of the propagation's
    health), with the images to label to mend it."""
    pct = f"{w.images} images ({100 * w.share:.1f} % of the store)"
    fix = f"; label some of these: {', '.join(w.paths)}" if w.paths else ""
    if w.kind == "isolated-class":
        one = w.seeds == 1
        where = "a component" if w.components == 1 else f"{w.components} components"
        return (
            f"warning: the {w.seeds} seed{'' if one else 's'} of class '{w.label}' "
            f"sit{'s' if one else ''} in {where} of {pct}: the graph carries '{w.label}' no "
            f"further{fix} (or run `vecstore suggest`)"
        )
    if w.kind == "unseeded-component":
        return (
            f"warning: a component of {pct} holds no expert label: its images only get a vote "
            f"of their nearest neighbours{fix}"
        )
    parts = "1 component" if w.components == 1 else f"{w.components} components"
    return (
        f"warning: {pct}, in {parts}, are not connected to any expert label in the graph: "
        f"labeled by a vote of their nearest neighbours and flagged for review{fix}"
    )


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


@click.command()
@output_file_option("CSV file to write.")
@space_option("Default: the latest propagation of all spaces.")
@run_option("Use this propagation run.")
@click.option("--only-unlabeled", is_flag=True, help="Leave out the images with an expert label.")
@click.option(
    "--min-confidence", type=click.FloatRange(0, 1), default=None, help="Leave out rows below it."
)
@click.option(
    "--review-below",
    type=click.FloatRange(0, 1),
    default=None,
    help="needs_review below this confidence (default: the latest evaluation's "
    "recommendation, else 0.3).",
)
@click.pass_obj
def export(obj: Ctx, out, space, run_id, only_unlabeled, min_confidence, review_below) -> None:
    """Write the pseudo-labels as CSV, one row per image.

    Columns: image_id, path, sha256, label, source (expert/propagated), confidence,
    second_label, margin, cluster, needs_review, review_reason, run_id. Loads with
    pandas.read_csv and no options.

    \b
    Example:
      vecstore export -o pseudo_labels.csv --only-unlabeled
    """
    opts = ExportOptions(
        space=space,
        run_id=run_id,
        only_unlabeled=only_unlabeled,
        min_confidence=min_confidence,
        review_below=review_below,
    )
    with obj.open() as store:
        r = store.export(out, opts)
    click.echo(
        f"wrote {r.rows} rows to {where(out)} (propagation run {r.run_id}, space {r.space}; "
        f"{r.needs_review} need review, threshold {r.review_below:.2f} from "
        f"{r.review_below_from})",
        err=data_on_stdout(out),
    )
    if r.positive_rule:
        click.echo(_positive_rule_line(r.positive_rule), err=data_on_stdout(out))


def _positive_rule_line(rule: dict) -> str:
    pos, ev = rule["label"], rule["evaluate_run"]
    if rule["threshold"] is None:
        return (
            f"no recall promise for {pos!r} (evaluate run {ev} declined it: "
            f"{rule['positives_needed']} {pos!r} labels needed): labels are the most probable class"
        )
    return (
        f"{pos!r} when p({pos}) >= {rule['threshold']:.4f}: recall >= {rule['target_recall']:.2f} "
        f"with probability >= {rule['confidence']:.2f} (evaluate run {ev})"
    )


@click.command()
@click.option(
    "-n", "n", type=click.IntRange(1), default=50, show_default=True, help="How many images."
)
@output_file_option("CSV to write (fill its `label` column, then `vecstore labels import` it).")
@space_option()
@seed_option(0)
@click.pass_obj
def suggest(obj: Ctx, n: int, out: Path, space, seed: int) -> None:
    """The images whose labels would help most, with why each was picked.

    While some groups of images have no label, the most typical image of each (the largest
    groups first); once they have labels, the least certain pseudo-labels, one per group.
    Never an image already labeled, never two near-duplicates.

    \b
    Example:
      vecstore suggest -n 50 -o to_label.csv
      # fill the label column, then:
      vecstore labels import to_label.csv
    """
    with obj.open() as store:
        picks = store.suggest(n, space, seed=seed, out=out)
    then = "save it, " if str(out) == "-" else ""
    click.echo(
        f"wrote {len(picks)} images to label to {where(out)} ({then}fill the `label` column, "
        f"then `vecstore labels import {'FILE.csv' if then else out}`)",
        err=data_on_stdout(out),
    )
