"""`vecstore forget`: drop files from the store on purpose (a moved or deleted file that
`vecstore check` keeps reporting)."""

from __future__ import annotations

import click

from .context import Ctx
from .options import who_option


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option(
    "--missing", is_flag=True, help="Only the files that are not on disk now (under the PATHS)."
)
@click.option(
    "--drop-labels",
    is_flag=True,
    help="Forget images that carry an expert label too (the change is recorded).",
)
@who_option
@click.pass_obj
def forget(obj: Ctx, paths: tuple[str, ...], missing: bool, drop_labels: bool, who) -> None:
    """Forget files the store knows: PATHS are files, or folders (every known file under
    them). An image left with no path goes with its vectors; one with an expert label is
    kept (nothing is forgotten) unless --drop-labels.

    \b
    Examples:
      vecstore forget scans/old/x.png
      vecstore forget --missing scans/          # the files deleted or moved away
    """
    with obj.open(write=True) as store:
        r = store.forget(list(paths), missing_only=missing, drop_labels=drop_labels, who=who)
    line = f"forgot {r.paths} paths and {r.images} images"
    if r.labels:
        line += f", with {r.labels} expert labels (label batch {r.batch})"
    click.echo(line)
