"""Labeling: `vecstore cluster`, `propagate`, `export`, `suggest` (`evaluate` is in
cli/evaluation.py), and `export-vectors` beside `export`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from vecstore.params import (
    EXPORT_FORMATS,
    EXPORT_MEDIA,
    ClusterParams,
    ExportOptions,
    PropagationParams,
)

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
    from vecstore.results import Clustering, Export, Propagation

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
def propagate(obj: Ctx, space, method, neighbors, alpha, fmt) -> None:
    """Spread the expert labels to the other images of a space (by default over its k-NN
    graph; `vecstore evaluate --compare-methods` scores the methods side by side).

    Each image gets a pseudo-label, a confidence (1 - entropy/log C), the runner-up label and
    the margin; expert labels are never overwritten. The run and its parameters are stored.

    \b
    Examples:
      vecstore propagate --space pixels -k 5
      vecstore propagate --space hog --method auto
    """
    params = build(PropagationParams, n_neighbors=neighbors, alpha=alpha, method=method)
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
        f"{r.propagated} images by {r.method} (mean confidence {r.mean_confidence:.3f})"
    )
    if r.chosen_by:
        c = r.chosen_by
        scores = ", ".join(
            f"{row['method']} {row['mean'][c['criterion']]:.3f}"
            for row in c["rows"]
            if row["mean"][c["criterion"]] is not None
        )
        click.echo(f"method auto: {r.method}, best {c['criterion']} out-of-fold ({scores})")
    counts = sorted(r.counts.items(), key=lambda kv: str(kv[0]))
    click.echo(table([{"label": k, "count": v} for k, v in counts], ["label", "count"]))
    if r.unreached and r.health is None:
        click.echo(
            f"{r.unreached} images are reached by no expert label ({r.method}): flagged for review"
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
@click.option(
    "-o",
    "--output",
    "out",
    type=click.Path(path_type=Path),
    required=True,
    help="File to write (csv, label-studio); a new or empty folder (fiftyone, imagefolder).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(EXPORT_FORMATS),
    default="csv",
    show_default=True,
    help="csv: vecstore's table. label-studio: tasks JSON (pseudo-labels as predictions) and "
    "its labeling config. fiftyone: a FiftyOneImageClassificationDataset (labels.json with "
    "confidences). imagefolder: one folder per class (torchvision's ImageFolder).",
)
@click.option(
    "--media",
    type=click.Choice(EXPORT_MEDIA),
    default=None,
    help="fiftyone, imagefolder: copy the images (the default), symlink them, or (fiftyone) "
    "list their paths in data.json.",
)
@space_option("Default: the latest propagation of all spaces.")
@run_option("Use this propagation run.")
@click.option("--only-unlabeled", is_flag=True, help="Leave out the images with an expert label.")
@click.option(
    "--min-confidence", type=click.FloatRange(0, 1), default=None, help="Leave out rows below it."
)
@click.option(
    "--review-share",
    type=click.FloatRange(0, 1),
    default=None,
    help="Flag this share of the pseudo-labels, least sure first (default: the share the "
    "latest `vecstore evaluate` calibrated for its target accuracy, else 0.25).",
)
@click.option(
    "--with-metadata",
    "with_metadata",
    metavar="COLUMNS",
    default="",
    help="Add these metadata columns (comma-separated; `all`: every column but the "
    "identifying ones, PatientID and the study, series and instance UIDs, which come out "
    "only when named). `vecstore info` lists them. Default: none.",
)
@click.pass_obj
def export(
    obj: Ctx,
    out,
    fmt,
    media,
    space,
    run_id,
    only_unlabeled,
    min_confidence,
    review_share,
    with_metadata,
) -> None:
    """Write the pseudo-labels, one row (task, file) per image.

    CSV columns: image_id, path, sha256, label, source (expert/propagated), confidence,
    second_label, margin (to the decision applied), cluster, needs_review, review_reason,
    run_id, decision, p_<class> for each class (the probabilities cleanlab takes). Loads with
    pandas.read_csv and no options.

    \b
    Examples:
      vecstore export -o pseudo_labels.csv --only-unlabeled
      vecstore export --format label-studio -o tasks.json
      vecstore export --format imagefolder -o dataset/ --media symlink
    """
    opts = build(
        ExportOptions,
        space=space,
        run_id=run_id,
        only_unlabeled=only_unlabeled,
        min_confidence=min_confidence,
        review_share=review_share,
        with_metadata=tuple(c.strip() for c in with_metadata.split(",") if c.strip()),
        format=fmt,
        media=media,
    )
    with obj.open() as store:
        r = store.export(out, opts)
    what = {"label-studio": "tasks", "csv": "rows"}.get(fmt, "images")
    click.echo(
        f"wrote {r.rows - r.skipped_unlabeled} {what} to {where(out)} (propagation run "
        f"{r.run_id}, space {r.space}; {r.needs_review} need review: {_review_line(r)})",
        err=data_on_stdout(out),
    )
    for line in _format_lines(r):
        click.echo(line, err=data_on_stdout(out))
    if r.positive_rule:
        click.echo(_positive_rule_line(r.positive_rule), err=data_on_stdout(out))


def _format_lines(r: Export) -> list[str]:
    """What a user of the format needs to know next."""
    lines = []
    if r.skipped_unlabeled:
        lines.append(f"left out {r.skipped_unlabeled} images no label reached")
    if r.label_config:
        lines.append(f"labeling config (paste it in the project's settings): {r.label_config}")
    if r.document_root:
        lines.append(
            "Label Studio serves the images when started with "
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true "
            f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={r.document_root} and given a Local "
            f"Files storage of that path (project settings, Cloud Storage; tasks imported "
            "from this file, not synced); its JSON, JSON-MIN or CSV export goes back with "
            "`vecstore labels import FILE`"
        )
    return lines


@click.command("export-vectors")
@click.argument("space")
@output_file_option("Parquet file to write.")
@click.pass_obj
def export_vectors(obj: Ctx, space: str, out: Path) -> None:
    """Write the vectors of SPACE as Parquet, one row per image with a vector there.

    Columns: path (as stored: an image's first path), sha256, image_id, vector (the stored
    float32 vector, not normalised). `vecstore import-vectors` reads it back into another
    store; pandas.read_parquet reads it as is.

    \b
    Example:
      vecstore export-vectors pixels -o pixels.parquet
      vecstore --store other import-vectors pixels.parquet --space pixels-copy
    """
    with obj.open() as store:
        r = store.export_vectors(space, out, progress=True)
    click.echo(
        f"wrote {r.rows} vectors of space {r.space} ({r.dim}-d) to {where(out)} "
        f"in {r.seconds:.1f} s",
        err=data_on_stdout(out),
    )


def _review_line(r: Export) -> str:
    """How the review flag was set, for the export's summary line."""
    origin = {
        "given": "--review-share",
        "default": "the default; `vecstore evaluate` calibrates it",
    }.get(r.review_from, r.review_from)
    if r.review_share is None:
        return f"every pseudo-label: {origin} found no share reaching its target accuracy"
    line = f"the {100 * r.review_share:.0f} % least sure pseudo-labels, from {origin}"
    if r.expected_accuracy is not None:
        line += f": the others expected {r.expected_accuracy:.3f} accurate"
    return line


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
    with obj.open(write=True) as store:  # the picks are recorded, as a run
        picks = store.suggest(n, space, seed=seed, out=out)
    then = "save it, " if str(out) == "-" else ""
    click.echo(
        f"wrote {len(picks)} images to label to {where(out)} ({then}fill the `label` column, "
        f"then `vecstore labels import {'FILE.csv' if then else out}`)",
        err=data_on_stdout(out),
    )
