"""Expert labels: `vecstore labels` (counts), `labels import`, `labels set`, `labels remove`."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import click

from .context import Ctx
from .options import output_option
from .output import emit_rows


@click.group(invoke_without_command=True)
@output_option()
@click.pass_context
def labels(ctx: click.Context, fmt: str) -> None:
    """Expert labels: counts per label and source (and the latest pseudo-labels).

    \b
    Examples:
      vecstore labels
      vecstore labels import labels.csv          # columns: path (or sha256), label
      vecstore labels set scans/x.png cancer
      vecstore labels remove scans/x.png
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
    emit_rows(rows, ["label", "source", "count", "needs_review"], fmt)


@labels.command("import")
@click.argument("csv_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--replace", is_flag=True, help="Change expert labels that differ (default: refuse).")
@click.option(
    "--new-class", is_flag=True, help="Accept labels that are not yet a class of the store."
)
@click.pass_obj
def labels_import(obj: Ctx, csv_file: Path, replace: bool, new_class: bool) -> None:
    """Import expert labels from CSV_FILE (columns `path` or `sha256`, and `label`).

    All rows or none: an unknown image, an empty label, the same image with two labels, an
    unknown class (a typo?) stops the import with the list of bad rows.
    """
    with obj.open(write=True) as store:
        counts = store.import_labels(csv_file, replace=replace, new_class=new_class)
    click.echo(
        f"imported {csv_file}: {counts.added} added, {counts.replaced} replaced, "
        f"{counts.unchanged} unchanged"
    )


@labels.command("set")
@click.argument("target")
@click.argument("label")
@click.option("--replace", is_flag=True, help="Change an existing expert label.")
@click.option("--new-class", is_flag=True, help="Accept a label that is not yet a class.")
@click.pass_obj
def labels_set(obj: Ctx, target: str, label: str, replace: bool, new_class: bool) -> None:
    """Set the expert label of TARGET (an image path, sha256 or id)."""
    with obj.open(write=True) as store:
        change = store.set_label(target, label, replace=replace, new_class=new_class)
    was = f" (was {change.previous})" if change.previous and change.previous != change.label else ""
    click.echo(f"image {change.image_id}: {change.label}{was}")


@labels.command("remove")
@click.argument("target")
@click.pass_obj
def labels_remove(obj: Ctx, target: str) -> None:
    """Remove the expert label of TARGET (an image path, sha256 or id)."""
    with obj.open(write=True) as store:
        change = store.remove_label(target)
    click.echo(f"image {change.image_id}: label {change.previous} removed")
