"""The `vecstore` command line: a thin layer over vecstore.Store.

A command parses its options, calls the Store (once per space with --compare) and formats
the typed result it gets back; no SQL or FAISS here. Library errors become one clean message
and exit status 1 (here, in VecstoreGroup); bad option values are usage errors (exit 2).
"""

from __future__ import annotations

import click

from vecstore import __version__
from vecstore.errors import VecstoreError

from .context import Ctx
from .evaluation import evaluate
from .forget import forget
from .ingest import embed, import_vectors, ingest
from .labeling import cluster, export, export_vectors, propagate, suggest
from .labels import labels
from .reports import demo, plan, report
from .search import query, reindex
from .serve import serve
from .status import check, info, runs
from .transform import transform


class VecstoreGroup(click.Group):
    """The one place where library errors become CLI errors."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except VecstoreError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=VecstoreGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--store",
    metavar="PATH",
    default=None,
    help="Store folder (default: $VECSTORE_STORE, else ./.vecstore).",
)
@click.option(
    "--wait",
    metavar="SECONDS",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="A writing command waits this long for another writer (an ingest, `vecstore serve` "
    "saving a label) to finish, instead of stopping with 'store is locked'.",
)
@click.version_option(__version__, prog_name="vecstore")
@click.pass_context
def main(ctx: click.Context, store: str | None, wait: float) -> None:
    """vecstore: image similarity search and semi-supervised labeling.

    \b
    vecstore ingest scans/ --space resnet18 --labels-from-folders
    vecstore query scans/unlabeled/x.png -k 10
    vecstore info
    """
    ctx.obj = Ctx(store, wait)


for command in (
    ingest,
    embed,
    import_vectors,
    forget,
    query,
    reindex,
    transform,
    info,
    check,
    runs,
    labels,
    cluster,
    propagate,
    evaluate,
    export,
    export_vectors,
    suggest,
    report,
    plan,
    demo,
    serve,
):
    main.add_command(command)

__all__ = ["main"]


if __name__ == "__main__":  # python -m vecstore.cli
    main()
