"""Stored images as the browser gets them: PNG thumbnails and full views, 16-bit images
windowed (center / width in the image's own units) to 8 bits; every file read through
vecstore.imagefile (a regular file, within the size and pixel limits)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..imagefile import open_image_file
from ..params import FileLimits

THUMB_SIZES = (64, 96, 128, 160, 192, 256, 320)  # the sizes a thumbnail may be asked at


@dataclass(frozen=True)
class Window:
    """A window/level: the values from center - width/2 to center + width/2 span black to
    white; None: the image's own range."""

    center: float | None = None
    width: float | None = None


def describe(path: str, limits: FileLimits) -> dict:
    """Size, mode and bits per sample of a stored image; for more than 8 bits, the range
    of its values (what window/level sliders span)."""
    img = open_image_file(path, limits)
    out = {"size": list(img.size), "mode": img.mode, "bits": _bits(img), "range": None}
    if out["bits"] > 8:
        lo, hi = img.getextrema() if img.mode in ("I", "F") else img.convert("I").getextrema()
        out["range"] = [float(lo), float(hi)]
    return out


def thumbnail_png(path: str, size: int, limits: FileLimits) -> bytes:
    img = _eight_bit(open_image_file(path, limits), Window())
    img.thumbnail((size, size))
    return _png(img)


def full_png(path: str, window: Window, limits: FileLimits) -> bytes:
    return _png(_eight_bit(open_image_file(path, limits), window))


def _bits(img: Image.Image) -> int:
    return 16 if img.mode in ("I;16", "I;16B", "I;16L", "I", "F") else 8


def _eight_bit(img: Image.Image, window: Window) -> Image.Image:
    """8-bit gray or RGB for the browser; gray of more bits windowed to 8 (an 8-bit image
    windowed too when a window is given)."""
    if _bits(img) == 8 and window.center is None and window.width is None:
        return img.convert("RGB") if img.mode not in ("L", "RGB") else img
    a = np.asarray(img.convert("F") if img.mode not in ("I", "F") else img, np.float64)
    lo, hi = float(a.min()), float(a.max())
    width = window.width if window.width and window.width > 0 else max(hi - lo, 1.0)
    center = window.center if window.center is not None else (lo + hi) / 2
    out = np.clip((a - (center - width / 2)) / width, 0.0, 1.0) * 255.0
    return Image.fromarray(out.round().astype(np.uint8), "L")


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=1)
    return buf.getvalue()
