"""Embedder protocol, image decoding shared by all embedders, and the registry."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from ..imagefile import DEFAULT_LIMITS, decode_image, open_image_file
from ..params import FP32, FileLimits

# A batch from an embedder: the ids it embedded, their vectors (len(ids) x dim, float32) and
# the (id, reason) of the items it could not embed.
Batch = tuple[list[int], np.ndarray, list[tuple[int, str]]]


@dataclass(frozen=True)
class SpaceInfo:
    """What a space records about how its vectors were made."""

    name: str
    model: str
    layer: str | None
    dim: int
    preprocessing: str
    weights: str = "none"
    weights_random: bool = False
    weights_sha256: str | None = None
    precision: str = FP32  # of the forward pass (vecstore.params.PRECISIONS)


class Embedder(Protocol):
    info: SpaceInfo

    def embed_image(self, img: Image.Image) -> np.ndarray:
        """One decoded image to a float32 vector of length ``info.dim``."""

    def embed_files(self, items: Sequence[tuple[int, str]]) -> Iterator[Batch]:
        """Embed many files, yielding batches; a bad file is reported, never raised."""


def open_image(source: str | Path | bytes, limits: FileLimits = DEFAULT_LIMITS) -> Image.Image:
    """Open and fully decode an image, upright (a truncated file fails here, not later), the
    one way vecstore does it: see vecstore.imagefile (regular files only, size and pixel
    limits, EXIF orientation)."""
    if isinstance(source, bytes):
        return decode_image(source, limits)
    return open_image_file(source, limits)


def to_8bit(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit images to 8 bits: 16-bit data uses its full range (value / 257)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img).astype(np.float64)
        hi = float(arr.max()) if arr.size else 0.0
        lo = float(arr.min()) if arr.size else 0.0
        if img.mode.startswith("I;16") or (0 <= lo and hi <= 65535 and hi > 255):
            arr = arr / 257.0
        elif not (0 <= lo and hi <= 255):  # arbitrary range (float TIFF): stretch min..max
            arr = (arr - lo) / ((hi - lo) or 1.0) * 255.0
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
    return img


def _drop_alpha(img: Image.Image) -> Image.Image:
    """Composite transparent images over black (the colour under alpha=0 is arbitrary)."""
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return img


def to_rgb(img: Image.Image) -> Image.Image:
    img = _drop_alpha(to_8bit(img))
    return img if img.mode == "RGB" else img.convert("RGB")


def to_gray(img: Image.Image) -> Image.Image:
    img = _drop_alpha(to_8bit(img))
    return img if img.mode == "L" else img.convert("L")
