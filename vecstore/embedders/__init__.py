"""Embedder registry: a space name to the object that turns images into vectors."""

from __future__ import annotations

from ..errors import BadInput, UnknownSpace
from ..params import PRECISIONS
from .base import Batch, Embedder, SpaceInfo, open_image, to_gray, to_rgb
from .classic import CLASSIC, ClassicEmbedder

CNN_NAMES = ("resnet18", "resnet50", "resnet18-layer3", "resnet50-layer3")
NAMES = (*CNN_NAMES, *CLASSIC)


def is_cnn(name: str) -> bool:
    return name in CNN_NAMES


def get_embedder(
    name: str,
    *,
    weights: str | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    workers: int | None = None,
    precision: str = "fp32",
) -> Embedder:
    """Build the embedder of a space. CNNs load torch lazily, here and only here."""
    if precision not in PRECISIONS:
        raise BadInput(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if batch_size is not None and batch_size < 1:
        raise BadInput(f"batch size must be at least 1, not {batch_size}")
    if workers is not None and workers < 0:
        raise BadInput(f"workers must be 0 (decode in the main process) or more, not {workers}")
    if weights is not None:
        weights = str(weights)  # a Path is welcome too
    if name in CLASSIC:
        if weights not in (None, "none"):
            raise UnknownSpace(f"space {name!r} is a classical descriptor and takes no --weights")
        if precision != "fp32":
            raise BadInput(f"space {name!r} is a classical descriptor: it computes in fp32 only")
        return ClassicEmbedder(name, batch_size=batch_size or 256, workers=workers)
    if name in CNN_NAMES:
        from .resnet import ResNetEmbedder

        return ResNetEmbedder(
            name,
            weights=weights,
            device=device,
            batch_size=batch_size or 32,
            workers=workers,
            precision=precision,
        )
    raise UnknownSpace(f"unknown space {name!r}; choose one of: {', '.join(NAMES)}")


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
