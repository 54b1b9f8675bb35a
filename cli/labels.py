"""Expert labels: `vecstore labels` (counts), `labels import`, `set`, `remove`, `undo`,
`history`. Every change is a recorded batch (who, when, from what) that `undo` takes back, and
every label records how its image was chosen (folder, import, suggested, review)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from pathlib import Path

import click

from vecstore.params import CHOSEN_GIVEN, CHOSEN_HOW, NOT_PICKED_BY_VECSTORE

from .context import Ctx
from .options import output_option, who_option
from .output import emit_rows

BATCH_COLUMNS = ["id", "at", "who", "kind", "source", "changes", "undone_by"]
EVENT_COLUMNS = [
    "batch",
    "at",
    "who",
    "kind",
    "path",
    "old_label",
    "new_label",
    "old_chosen",
    "new_chosen",
    "review_reason",
]
COUNT_COLUMNS = ["label", "source", "chosen", "count", "needs_review"]


def chosen_option(default: str | None, what: str):
    """--chosen: how the images came to be labeled, as a person says it."""
    meaning = "; ".join(f"{c}: {CHOSEN_HOW[c]}" for c in CHOSEN_GIVEN)
    return click.option(
        "--chosen",
        type=click.Choice(CHOSEN_GIVEN),
        default=default,
        show_default=default is not None,
        help=f"How {what} came to be labeled ({meaning}). Only labels vecstore did not pick "
        f"({', '.join(NOT_PICKED_BY_VECSTORE)}) estimate accuracy without bias.",
    )


@click.group(invoke_without_command=True)
@output_option()
@click.pass_context
def labels(ctx: click.Context, fmt: str) -> None:
    """Expert labels: counts per label, source and how chosen (and the latest pseudo-labels).

    \b
    Examples:
      vecstore labels
      vecstore labels import labels.csv          # columns: path (or sha256), label
      vecstore labels set scans/x.png cancer
      vecstore labels remove scans/x.png
      vecstore labels undo                       # takes back the last change
      vecstore labels history scans/x.png        # who labeled it, when, what it was
    """
    if ctx.invoked_subcommand is not None:
        return
    with ctx.obj.open() as store:
        rows = [asdict(c) for c in store.label_counts()]
    if not rows and fmt == "table":
        click.echo(
            "no labels yet (vecstore labels import FILE.csv, or ingest --labels-from-folders)"
        )
        return
    emit_rows(rows, COUNT_COLUMNS, fmt)
    if fmt == "table":
        click.echo(chosen_summary(rows))


def chosen_summary(rows: list[dict]) -> str:
    """The expert labels by how chosen, and how many an unbiased accuracy rests on."""
    by = Counter()
    for r in rows:
        if r["chosen"] is not None:
            by[r["chosen"]] += r["count"]
    known = [c for c in CHOSEN_HOW if by[c]] + sorted(k for k in by if k not in CHOSEN_HOW)
    unbiased = sum(by[c] for c in NOT_PICKED_BY_VECSTORE)
    return (
        f"\nexpert labels by how chosen: {', '.join(f'{c} {by[c]}' for c in known) or 'none'}; "
        f"{unbiased} not picked by vecstore ({', '.join(NOT_PICKED_BY_VECSTORE)}) estimate "
        "accuracy without bias"
    )


@labels.command("import")
@click.argument("csv_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--replace", is_flag=True, help="Change expert labels that differ (default: refuse).")
@click.option(
    "--new-class", is_flag=True, help="Accept labels that are not yet a class of the store."
)
@click.option(
    "--accept-pseudo-labels",
    "accept_pseudo",
    is_flag=True,
    help="Accept the rows of vecstore's own pseudo-labels (an export's source=propagated) as "
    "labels, recorded with the source accepted-pseudo:<file> (default: refuse them).",
)
@chosen_option(
    None,
    "the file's images (default: suggested for a `vecstore suggest` output and for images a "
    "suggest run picked, review for accepted pseudo-labels, else import)",
)
@who_option
@click.pass_obj
def labels_import(
    obj: Ctx,
    csv_file: Path,
    replace: bool,
    new_class: bool,
    accept_pseudo: bool,
    chosen: str | None,
    who: str | None,
) -> None:
    """Import expert labels from CSV_FILE (columns `path` or `sha256`, and `label`), or
    from a Label Studio export (JSON, JSON-MIN or CSV) of the tasks `vecstore export
    --format label-studio` wrote: each submitted annotation is a label with the source
    label-studio, chosen "review"; tasks nobody annotated are skipped.

    All rows or none: an unknown image, an empty label, the same image with two labels, an
    unknown class (a typo?), or rows that are vecstore's own pseudo-labels (an export's
    `source` column) stop the import with the list of bad rows.
    """
    with obj.open(write=True) as store:
        counts = store.import_labels(
            csv_file,
            replace=replace,
            new_class=new_class,
            accept_pseudo=accept_pseudo,
            who=who,
            chosen=chosen,
        )
    how = ", ".join(f"{n} {c}" for c, n in sorted(counts.chosen.items()))
    skipped = f"; {counts.skipped} tasks without an annotation skipped" if counts.skipped else ""
    click.echo(
        f"imported {csv_file} ({counts.tool}): {counts.added} added, {counts.replaced} "
        f"replaced, {counts.unchanged} unchanged" + (f" (chosen: {how})" if how else "") + skipped
    )


@labels.command("set")
@click.argument("target")
@click.argument("label")
@click.option("--replace", is_flag=True, help="Change an existing expert label.")
@click.option("--new-class", is_flag=True, help="Accept a label that is not yet a class.")
@chosen_option("review", "the image")
@who_option
@click.pass_obj
def labels_set(
    obj: Ctx, target: str, label: str, replace: bool, new_class: bool, chosen: str, who: str | None
) -> None:
    """Set the expert label of TARGET (an image path, sha256 or id)."""
    with obj.open(write=True) as store:
        change = store.set_label(
            target, label, replace=replace, new_class=new_class, who=who, chosen=chosen
        )
    was = f" (was {change.previous})" if change.previous and change.previous != change.label else ""
    click.echo(f"image {change.image_id}: {change.label}{was}")


@labels.command("remove")
@click.argument("target")
@who_option
@click.pass_obj
def labels_remove(obj: Ctx, target: str, who: str | None) -> None:
    """Remove the expert label of TARGET (an image path, sha256 or id)."""
    with obj.open(write=True) as store:
        change = store.remove_label(target, who=who)
    click.echo(f"image {change.image_id}: label {change.previous} removed")


@labels.command("undo")
@click.option(
    "--batch",
    "batch",
    type=int,
    default=None,
    help="The batch to undo (see `vecstore labels history`; default: the latest).",
)
@who_option
@click.pass_obj
def labels_undo(obj: Ctx, batch: int | None, who: str | None) -> None:
    """Undo a batch of label changes: its images get back exactly the labels they had.

    Refused when a later batch changed one of its images (undo that one first).

    \b
    Examples:
      vecstore labels undo
      vecstore labels undo --batch 12
    """
    with obj.open(write=True) as store:
        r = store.undo_labels(batch, who=who)
    gone = f"; {r.gone} of its images are no longer in the store" if r.gone else ""
    click.echo(
        f"undid batch {r.batch} ({r.kind}): {r.restored} labels restored, recorded as batch "
        f"{r.undo_batch}{gone}"
    )


@labels.command("history")
@click.argument("target", required=False)
@output_option()
@click.pass_obj
def labels_history(obj: Ctx, target: str | None, fmt: str) -> None:
    """Every batch of label changes, or the changes of TARGET (a path, sha256 or id).

    \b
    Examples:
      vecstore labels history
      vecstore labels history scans/x.png --json
    """
    with obj.open() as store:
        rows = [r.to_dict() for r in store.label_history(target)]
    columns = BATCH_COLUMNS if target is None else EVENT_COLUMNS
    emit_rows(rows, list(rows[0]) if rows and fmt != "table" else columns, fmt)
