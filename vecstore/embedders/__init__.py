"""Embedder registry: a space name to the object that turns images into vectors."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..errors import BadInput, UnknownSpace
from ..params import FP32, PRECISIONS, PREPROCESS, EmbedOptions
from .base import Batch, Embedder, SpaceInfo, open_image, to_gray, to_rgb
from .classic import CLASSIC, ClassicEmbedder

CNN_NAMES = ("resnet18", "resnet50", "resnet18-layer3", "resnet50-layer3")
NAMES = (*CNN_NAMES, *CLASSIC)


def is_cnn(name: str) -> bool:
    return name in CNN_NAMES


def get_embedder(name: str, options: EmbedOptions | None = None, **fields: Any) -> Embedder:
    """Build the embedder of a space from ``options`` with ``fields`` (EmbedOptions' names)
    replaced, e.g. ``get_embedder("resnet18", weights="random", device="cpu")``; precision
    None: fp32. CNNs load torch lazily, here and only here."""
    options = replace(options or EmbedOptions(), **fields)
    if options.weights is not None:
        options = replace(options, weights=str(options.weights))  # a Path is welcome too
    _check(name, options)
    if name in CLASSIC:
        return ClassicEmbedder(name, batch_size=options.batch_size or 256, workers=options.workers)
    if name in CNN_NAMES:
        from .resnet import ResNetEmbedder

        return ResNetEmbedder(name, options)
    raise UnknownSpace(f"unknown space {name!r}; choose one of: {', '.join(NAMES)}")


def _check(name: str, o: EmbedOptions) -> None:
    """Options that mean nothing (or nothing for this space) are refused by name."""
    if o.precision is not None and o.precision not in PRECISIONS:
        raise BadInput(f"precision {o.precision!r} is not one of {', '.join(PRECISIONS)}")
    if o.preprocess not in PREPROCESS:
        raise BadInput(f"preprocess {o.preprocess!r} is not one of {', '.join(PREPROCESS)}")
    if o.batch_size is not None and o.batch_size < 1:
        raise BadInput(f"batch size must be at least 1, not {o.batch_size}")
    if o.workers is not None and o.workers < 0:
        raise BadInput(f"workers must be 0 (decode in the main process) or more, not {o.workers}")
    if name in CLASSIC and o.weights not in (None, "none"):
        raise UnknownSpace(f"space {name!r} is a classical descriptor and takes no --weights")
    if name in CLASSIC and o.precision not in (None, FP32):
        raise BadInput(f"space {name!r} is a classical descriptor: it computes in fp32 only")


__all__ = [
    "Batch",
    "Embedder",
    "SpaceInfo",
    "NAMES",
    "CNN_NAMES",
    "get_embedder",
    "is_cnn",
    "open_image",
    "to_gray",
    "to_rgb",
]
