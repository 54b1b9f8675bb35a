"""What a space's vectors go through before the cosine: `vecstore transform`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from vecstore.params import ParamError

from .context import Ctx
from .options import SPACE_HELP, output_option
from .output import emit_json
from .search import index_details

if TYPE_CHECKING:  # pragma: no cover
    from vecstore.results import Transformed

# the option that sets each parameter of the library's transform (for usage errors)
OPTION_OF = {"n_components": "--pca", "kind": "--raw / --center / --pca", "seed": "--seed"}


@click.command()
@click.option("--space", required=True, metavar="NAME", help=SPACE_HELP)
@click.option("--raw", is_flag=True, help="No transform: the cosine of the vectors as embedded.")
@click.option("--center", is_flag=True, help="Subtract the mean vector before the cosine.")
@click.option(
    "--pca",
    type=click.IntRange(1),
    metavar="N",
    default=None,
    help="PCA-whiten to N dimensions before the cosine (fitted on a seeded sample of the "
    "vectors when there are many).",
)
@click.option(
    "--auto",
    is_flag=True,
    help="Try raw, centred and PCA-whitened (50 dims) vectors and keep the one whose expert "
    "labels score best out-of-fold (F2 of the rarer class for two classes, else accuracy).",
)
@click.option(
    "--seed",
    type=int,
    default=None,
    help="Seed of the PCA's vector sample and solver (same seed, same result).",
)
@output_option(csv=False)
@click.pass_obj
def transform(
    obj: Ctx, space: str, raw: bool, center: bool, pca: int | None, auto: bool, seed, fmt
) -> None:
    """Choose what a space's vectors go through before the cosine: nothing (--raw), their
    mean subtracted (--center), a PCA whitening to N dimensions (--pca N), or the best of
    these three by out-of-fold score on the expert labels (--auto).

    It is fitted on the space's vectors now, recorded as a run, and used from then on by
    queries, clustering, propagation, suggestions, evaluation and the report; the space's
    index is rebuilt under it. On some embeddings every vector shares a large common part,
    and centring changes the neighbours a lot; on others it costs a little: compare with
    `vecstore evaluate` before and after.

    \b
    Examples:
      vecstore transform --space hog --center
      vecstore transform --space resnet18 --pca 64
      vecstore transform --space hog --raw
      vecstore transform --space hog --auto
    """
    kind = _kind(raw, center, pca, auto)
    extra = {} if seed is None else {"seed": seed}
    try:
        with obj.open(write=True) as store:
            done = store.transform(space, kind, pca, **extra)
    except ParamError as exc:
        raise click.BadParameter(exc.reason, param_hint=OPTION_OF.get(exc.field)) from None
    if fmt == "json":
        emit_json([done.to_dict()])
    else:
        click.echo(_summary(done))


def _kind(raw: bool, center: bool, pca: int | None, auto: bool) -> str:
    """The kind asked for: exactly one of --raw, --center, --pca N, --auto."""
    flags = (("raw", raw), ("center", center), ("pca", pca is not None), ("auto", auto))
    chosen = [k for k, on in flags if on]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --raw, --center, --pca N, --auto")
    return chosen[0]


def _summary(done: Transformed) -> str:
    """'space hog: mean-centred (576 -> 576 dims, fitted on 400 vectors); index Flat
    rebuilt with 400 vectors'"""
    line = f"space {done.space}: {done.description}"
    if done.chosen_by:
        c = done.chosen_by
        tried = ", ".join(
            f"{t['kind']}{'' if t['n_components'] is None else ' ' + str(t['n_components'])} "
            f"{t['score']:.3f}"
            for t in c["tried"]
        )
        line = f"space {done.space}: auto chose {done.description} by {c['criterion']} ({tried})"
    if done.kind != "raw":
        line += f" ({done.dim_in} -> {done.dim_out} dims, fitted on {done.fitted_on} vectors)"
    if done.index is not None:
        line += f"; index {done.index.factory} with {done.index.n} vectors"
        line += index_details(done.index)
    return f"{line} (run {done.run_id})"
