"""Options shared by several commands, each declared once, with its default taken from the
library's parameter objects (PropagationParams, ClusterParams, EvaluationParams...)."""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from vecstore.params import (
    AUTO,
    LABEL_METHODS,
    PRECISIONS,
    PREPROCESS,
    EmbedOptions,
    ParamError,
    PropagationParams,
    parse_size,
)

F = TypeVar("F", bound=Callable[..., Any])

SPACE_HELP = (
    "Embedding space: resnet18, resnet50, resnet18-layer3, resnet50-layer3, hog, histogram, pixels."
)


def _stack(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """Apply several option decorators, the first listed shown first in --help."""

    def apply(f: F) -> F:
        for d in reversed(decorators):
            f = d(f)
        return f

    return apply


def space_option(default_help: str = "Default: the store's first space.") -> Callable[[F], F]:
    """One --space (stored as `space`, None when not given)."""
    return click.option("--space", default=None, help=f"{SPACE_HELP} {default_help}")


def spaces_option(*, required: bool = False, default_help: str = "") -> Callable[[F], F]:
    """Repeatable --space (stored as `spaces`, a tuple)."""
    return click.option(
        "--space",
        "spaces",
        multiple=True,
        required=required,
        help=f"{SPACE_HELP} Repeat for several. {default_help}".strip(),
    )


def output_option(*, csv: bool = True) -> Callable[[F], F]:
    """The output format, stored as `fmt`: a table (default), --json (one object per line)
    and, for commands that print rows, --csv (a header row)."""
    opts = [click.option("--json", "fmt", flag_value="json", help="One JSON object per line.")]
    if csv:
        opts.append(click.option("--csv", "fmt", flag_value="csv", help="CSV with a header row."))
    opts.append(click.option("--table", "fmt", flag_value="table", default=True, hidden=True))
    return _stack(*opts)


DEVICE_CHOICE = click.Choice(["auto", "cpu", "cuda"])


def device_option(help: str = "Where CNNs run.") -> Callable[[F], F]:
    return click.option(
        "--device", type=DEVICE_CHOICE, default="auto", show_default=True, help=help
    )


EMBEDDING_FIELDS = tuple(f.name for f in dataclasses.fields(EmbedOptions))  # one option each


def embedding_options(f: F) -> F:
    """--weights, --device, --batch-size, --workers, --precision, --preprocess: how a CNN
    space is computed, handed to the command as one ``embedding`` (EmbedOptions)."""

    @functools.wraps(f)
    def gathered(*args: Any, **kwargs: Any) -> Any:
        fields = {k: kwargs.pop(k) for k in EMBEDDING_FIELDS}
        return f(*args, embedding=EmbedOptions(**fields), **kwargs)

    return _stack(
        click.option(
            "--weights",
            default=None,
            metavar="imagenet|random|PATH",
            help="CNN weights: torchvision ImageNet weights (default, downloaded once to "
            "$TORCH_HOME), a local state-dict file, or `random` (untrained; only when asked "
            "explicitly).",
        ),
        device_option(),
        click.option(
            "--batch-size",
            type=click.IntRange(1),
            default=None,
            help="Images per batch (default: chosen from the device; 256 for descriptors).",
        ),
        click.option(
            "--workers",
            type=click.IntRange(0),
            default=None,
            help="Decoding workers (default: chosen from the cores and the device).",
        ),
        click.option(
            "--precision",
            type=click.Choice(PRECISIONS),
            default=None,
            help="A CNN's forward pass: fp32, or autocast to bf16 / fp16 (faster on GPUs with "
            "tensor cores, vectors within cosine 0.999). Recorded by a new space (default "
            "fp32); an existing space keeps its own.",
        ),
        click.option(
            "--preprocess",
            type=click.Choice(PREPROCESS),
            default=EmbedOptions.preprocess,
            show_default=True,
            help="Where a CNN's input is resized, cropped and normalised: host (PIL, the "
            "reference) or device (JPEG decoded there too; on CUDA by nvJPEG). auto: device "
            "on CUDA, host on the CPU. Vectors agree within cosine 0.9999.",
        ),
    )(gathered)


def output_file_option(help: str) -> Callable[[F], F]:
    """-o/--output FILE, required (stored as `out`, a Path)."""
    path = click.Path(dir_okay=False, path_type=Path)
    return click.option("-o", "--output", "out", type=path, required=True, help=help)


def run_option(help: str) -> Callable[[F], F]:
    """--run N: a propagation run (stored as `run_id`, None when not given)."""
    return click.option("--run", "run_id", type=int, default=None, help=help)


who_option = click.option(
    "--who",
    metavar="NAME",
    default=None,
    help="Who makes this change, as recorded in the label history (default: $VECSTORE_USER, "
    "else your login).",
)


def truth_option(help: str) -> Callable[[F], F]:
    return click.option("--truth", type=click.Path(dir_okay=False), default=None, help=help)


def seed_option(default: int) -> Callable[[F], F]:
    return click.option(
        "--seed",
        type=int,
        default=default,
        show_default=True,
        help="Random seed (same seed, same result).",
    )


def _size(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    try:
        return None if value is None else parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


memory_budget_option = click.option(
    "--memory-budget",
    callback=_size,
    metavar="SIZE",
    help="Memory the index may take (e.g. 4G, 512M); default half the RAM.",
)


def propagation_options(f: F) -> F:
    """--method, -k/--neighbors and --alpha, defaults from PropagationParams (stored as
    `method`, `neighbors`, `alpha`)."""
    return _stack(
        click.option(
            "--method",
            type=click.Choice([*LABEL_METHODS, AUTO]),
            default=PropagationParams.method,
            show_default=True,
            help="How the labels spread: "
            + "; ".join(f"{k}: {v}" for k, v in LABEL_METHODS.items())
            + "; auto: the best of these out-of-fold (F2 of the rarer class for two classes, "
            "else accuracy).",
        ),
        click.option(
            "-k",
            "--neighbors",
            "neighbors",
            type=int,
            default=PropagationParams.n_neighbors,
            show_default=True,
            help="Neighbours per image in the k-NN graph.",
        ),
        click.option(
            "--alpha",
            type=float,
            default=PropagationParams.alpha,
            show_default=True,
            help="Diffusion strength (Zhou et al.), between 0 and 1.",
        ),
    )(f)


def parse_k_range(_ctx: click.Context, _param: click.Parameter, value: str | None):
    """LO..HI -> (LO, HI)."""
    if value is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*\.\.\s*(\d+)\s*", value)
    if not m or not 2 <= int(m.group(1)) <= int(m.group(2)):
        raise click.BadParameter("use LO..HI with 2 <= LO <= HI, e.g. 2..20")
    return int(m.group(1)), int(m.group(2))


# the option of each parameter whose name is not --<field with dashes>
OPTION_OF = {"k": "-k", "n_neighbors": "--neighbors"}


def build(factory: Callable[..., Any], **values: Any) -> Any:
    """A library parameter object; its check failing (a value out of range, a bad
    combination) becomes a usage error that names the option."""
    try:
        return factory(**values)
    except ParamError as exc:
        hint = OPTION_OF.get(exc.field, "--" + exc.field.replace("_", "-"))
        raise click.BadParameter(exc.reason, param_hint=hint) from None
