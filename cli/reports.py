"""Reports and plans: `vecstore report`, `vecstore plan`, `vecstore demo`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from vecstore.params import PlanRequest

from .context import Ctx
from .ingest import print_ingest_report
from .options import (
    build,
    memory_budget_option,
    output_file_option,
    output_option,
    run_option,
    seed_option,
    space_option,
)
from .output import data_on_stdout, emit_json, table, where

if TYPE_CHECKING:  # pragma: no cover
    from vecstore.results import Plan


@click.command()
@output_file_option("HTML file to write.")
@space_option("Default: that of the propagation run, else the first.")
@run_option("Propagation run whose pseudo-labels to show.")
@click.option(
    "--projection",
    type=click.Choice(["pca", "tsne", "umap"]),
    default="pca",
    show_default=True,
    help="How the map is drawn (t-SNE and UMAP on the sample of points shown).",
)
@seed_option(0)
@click.pass_obj
def report(obj: Ctx, out: Path, space, run_id, projection, seed) -> None:
    """Write a self-contained HTML report: a 3D/2D map of the images (coloured by cluster,
    expert label, pseudo-label or confidence, thumbnails on hover, a cluster's images on
    request), the descriptor comparison, the evaluation, and the images to review next.
    Opens offline in any browser.

    \b
    Example:
      vecstore report -o report.html --space pixels
    """
    with obj.open() as store:
        r = store.report(out, space=space, run_id=run_id, projection=projection, seed=seed)
    shown = "the report to " + where(out) if str(out) == "-" else r.path
    click.echo(
        f"wrote {shown} ({r.bytes / 2**20:.1f} MiB, {r.points} of {r.images} images "
        f"on the map, space {r.space}) in {r.seconds:.1f} s",
        err=data_on_stdout(out),  # then standard output is exactly the page
    )


def _gib(b: float) -> str:
    return f"{b / 2**30:,.2f} GiB"


@click.command()
@click.option(
    "--images", type=click.IntRange(1), required=True, help="How many images to plan for."
)
@click.option(
    "--budget-eur", type=click.FloatRange(0), required=True, help="Total budget (compute + labels)."
)
@click.option("--eur-per-label", type=click.FloatRange(0, min_open=True), required=True)
@space_option()
@click.option(
    "--gpu-eur-per-hour",
    type=click.FloatRange(0),
    default=PlanRequest.gpu_eur_per_hour,
    show_default=True,
)
@click.option(
    "--gpu-images-per-s",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="GPU embedding rate, when the store has not measured one (--device cuda).",
)
@click.option(
    "--cpu-eur-per-hour",
    type=click.FloatRange(0),
    default=PlanRequest.cpu_eur_per_hour,
    show_default=True,
)
@click.option(
    "--target-accuracy",
    type=click.FloatRange(0, 1),
    default=PlanRequest.target_accuracy,
    show_default=True,
)
@memory_budget_option
@click.option(
    "--max-hours",
    type=click.FloatRange(0, min_open=True),
    default=PlanRequest.max_hours,
    show_default=True,
    help="Embedding must finish within this time: the cheapest device that does is chosen.",
)
@click.option(
    "--positive",
    default=None,
    help="The costly class (e.g. cancer): plan the labels a recall promise for it needs.",
)
@click.option("--target-recall", type=float, default=PlanRequest.target_recall, show_default=True)
@click.option("--confidence", type=float, default=PlanRequest.confidence, show_default=True)
@output_option(csv=False)
@click.pass_obj
def plan(
    obj: Ctx,
    images,
    budget_eur,
    eur_per_label,
    space,
    gpu_eur_per_hour,
    gpu_images_per_s,
    cpu_eur_per_hour,
    target_accuracy,
    memory_budget,
    max_hours,
    positive,
    target_recall,
    confidence,
    fmt,
) -> None:
    """Is labeling N images on a budget feasible, and under which conditions?

    From what the store measured (embedding rate per space and device, database size per
    image, the learning curve of `vecstore evaluate --curve`): embedding time and cost, storage
    and index, how many labels the budget leaves, the accuracy to expect, and a verdict with
    every assumption printed.

    \b
    Example:
      vecstore plan --images 4000000 --budget-eur 5000 --eur-per-label 1.5 --gpu-images-per-s 2000
    """
    request = build(
        PlanRequest,
        images=images,
        budget_eur=budget_eur,
        eur_per_label=eur_per_label,
        space=space,
        gpu_eur_per_hour=gpu_eur_per_hour,
        gpu_images_per_s=gpu_images_per_s,
        cpu_eur_per_hour=cpu_eur_per_hour,
        target_accuracy=target_accuracy,
        memory_budget=memory_budget,
        max_hours=max_hours,
        positive=positive,
        target_recall=target_recall,
        confidence=confidence,
    )
    with obj.open() as store:
        p = store.plan(request)
    if fmt == "json":
        emit_json([p.to_dict()])
    else:
        _print_plan(p)


def _plan_rows(p: Plan) -> list[dict]:
    rows = []
    for dev, c in p.compute.items():
        given = "" if c.measured else " (given)"
        rows.append(
            {
                "item": f"embedding on {dev}" + (" (chosen)" if dev == p.compute_choice else ""),
                "value": f"{c.hours:,.1f} h at {c.images_per_s:,.1f} images/s{given}",
                "eur": round(c.eur, 2),
            }
        )
    st = p.storage
    rows += [
        {"item": "vectors", "value": _gib(st.vectors_bytes), "eur": None},
        {"item": "database", "value": _gib(st.database_bytes), "eur": None},
        {"item": "index", "value": f"{st.index}, {_gib(st.index_bytes)}", "eur": None},
        {
            "item": "expert labels",
            "value": f"{p.labels_affordable:,} at {p.eur_per_label:g} EUR",
            "eur": round(p.labels_affordable * p.eur_per_label, 2),
        },
    ]
    q = p.quality
    if q.expected_accuracy is not None:
        fitted = (
            f" (fitted curve: {q.fitted_accuracy:.3f})" if q.fitted_accuracy is not None else ""
        )
        rows.append(
            {
                "item": "expected accuracy",
                "value": f"{q.expected_accuracy:.3f}{fitted}; {q.how}",
                "eur": None,
            }
        )
    if q.expected_recall is not None:
        rows.append(
            {
                "item": f"expected recall of {q.positive}",
                "value": f"{q.expected_recall:.3f}",
                "eur": None,
            }
        )
    return rows


def _print_plan(p: Plan) -> None:
    click.echo(f"plan for {p.images:,} images in space {p.space}, budget {p.budget_eur:g} EUR")
    click.echo(table(_plan_rows(p), ["item", "value", "eur"]))
    click.echo(f"\nverdict: {'FEASIBLE' if p.feasible else 'NOT FEASIBLE'}")
    for x in p.problems:
        click.echo(f"  problem: {x}")
    for title, lines in (("conditions", p.conditions), ("assumptions", p.assumptions)):
        click.echo(f"{title}:")
        for x in lines:
            click.echo(f"  - {x}")


@click.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-data"),
    show_default=True,
    help="Folder for the demo images.",
)
@click.option(
    "--space",
    "spaces",
    multiple=True,
    default=("pixels", "hog", "histogram"),
    show_default=True,
    help="Embedding spaces to compare.",
)
@click.option("-k", "k", type=click.IntRange(1), default=10, show_default=True)
@click.pass_obj
def demo(obj: Ctx, out: Path, spaces, k: int) -> None:
    """Run the whole pipeline on scikit-learn's digits.

    Writes them as PNGs (2 labeled per digit in labeled/<digit>/, the rest in unlabeled/,
    truth in truth.csv), ingests them, shows similar images, then per space clusters
    (k-means, spectral), propagates the labels, evaluates against truth.csv, and exports the
    pseudo-labels of the best space to pseudo_labels.csv.

    \b
    Example:
      vecstore --store demo-data/store demo --out demo-data
    """
    from vecstore.demo import run_demo

    with obj.open(write=True, create=True) as store:
        r = run_demo(store, out, spaces, k)
    click.echo(
        f"wrote {r.images} digit images to {out}/: {r.labeled} labeled in "
        "labeled/<digit>/, the rest in unlabeled/, their true digits in truth.csv"
    )
    print_ingest_report(r.ingest, verbose=False)
    click.echo(f"\nsimilar images in space {spaces[0]} (true digit of each neighbour):")
    for name, digit, got in r.examples:
        click.echo(f"  {name} (digit {digit}): {' '.join(got)}")
    click.echo(
        f"\nthe whole pipeline per space ({r.labeled} expert labels, "
        f"{r.images - r.labeled} images to label, scored against truth.csv):"
    )
    click.echo(table(r.rows, list(r.rows[0])))
    click.echo(
        f"\npseudo-labels of space {r.best} written to {r.export.path} ({r.export.rows} "
        f"rows, {r.export.needs_review} flagged needs_review)"
    )
    click.echo(f"store: {obj.store_path}  (try: vecstore --store {obj.store_path} labels)")
    click.echo(
        f"review the pseudo-labels in a browser: vecstore --store {obj.store_path} serve "
        "(then open http://localhost:8000/)"
    )
