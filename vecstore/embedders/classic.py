"""Classical descriptors: HOG (scikit-image), gray-level histogram, raw pixels."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from ..errors import EmbedError
from ..imagefile import OUT_OF_MEMORY
from .base import Batch, SpaceInfo, open_image, to_gray

HOG_SIZE = 32
HOG_PARAMS = {"orientations": 9, "pixels_per_cell": (8, 8), "cells_per_block": (2, 2)}
PIXELS_SIZE = 16


def _gray_resized(img: Image.Image, size: int, resample=Image.Resampling.BILINEAR) -> np.ndarray:
    g = to_gray(img).resize((size, size), resample)
    return np.asarray(g, dtype=np.float32) / 255.0


def hog_features(img: Image.Image) -> np.ndarray:
    from skimage.feature import hog

    return hog(_gray_resized(img, HOG_SIZE), block_norm="L2-Hys", **HOG_PARAMS).astype(np.float32)


def histogram_features(img: Image.Image) -> np.ndarray:
    arr = np.asarray(to_gray(img), dtype=np.uint8).ravel()
    counts = np.bincount(arr, minlength=256).astype(np.float32)
    return counts / max(arr.size, 1)


def pixel_features(img: Image.Image) -> np.ndarray:
    # box = area average: the faithful reduction (no aliasing); on the digits it also gives
    # better neighbours than bilinear (label propagation 0.937 vs 0.930 at 3 labels per digit)
    return _gray_resized(img, PIXELS_SIZE, Image.Resampling.BOX).ravel()


_HOG_DIM = (HOG_SIZE // 8 - 1) ** 2 * 2 * 2 * HOG_PARAMS["orientations"]

CLASSIC = {
    "hog": (
        hog_features,
        SpaceInfo(
            name="hog",
            model="hog",
            layer=None,
            dim=_HOG_DIM,
            preprocessing=(
                f"gray, resize {HOG_SIZE}x{HOG_SIZE} bilinear, skimage hog "
                "orientations=9 pixels_per_cell=8x8 cells_per_block=2x2 L2-Hys"
            ),
        ),
    ),
    "histogram": (
        histogram_features,
        SpaceInfo(
            name="histogram",
            model="histogram",
            layer=None,
            dim=256,
            preprocessing="gray 8-bit (16-bit / 257), 256-bin histogram normalised to sum 1",
        ),
    ),
    "pixels": (
        pixel_features,
        SpaceInfo(
            name="pixels",
            model="pixels",
            layer=None,
            dim=PIXELS_SIZE * PIXELS_SIZE,
            preprocessing=(
                f"gray, resize {PIXELS_SIZE}x{PIXELS_SIZE} box (area average), values / 255"
            ),
        ),
    ),
}


class ClassicEmbedder:
    """A descriptor computed per image; files are decoded in a small thread pool
    (PIL decoding and numpy release the GIL for most of the work)."""

    def __init__(self, name: str, batch_size: int = 256, workers: int | None = None) -> None:
        self.fn, self.info = CLASSIC[name]
        self.batch_size = batch_size
        self.workers = workers if workers is not None else min(4, os.cpu_count() or 1)

    def embed_image(self, img: Image.Image) -> np.ndarray:
        return self.fn(img)

    def _one(self, item: tuple[int, str]) -> tuple[int, np.ndarray | None, str]:
        image_id, path = item
        try:
            return image_id, self.fn(open_image(path)), ""
        except EmbedError as exc:
            return image_id, None, str(exc)
        except OSError as exc:
            return image_id, None, f"cannot read file: {exc.strerror or exc}"
        except MemoryError:  # one image too large for this machine: the others go on
            return image_id, None, OUT_OF_MEMORY

    def embed_files(self, items: Sequence[tuple[int, str]]) -> Iterator[Batch]:
        with ThreadPoolExecutor(max_workers=max(1, self.workers)) as pool:
            for start in range(0, len(items), self.batch_size):
                chunk = items[start : start + self.batch_size]
                ids, vecs, failed = [], [], []
                for image_id, vec, err in pool.map(self._one, chunk):
                    if vec is None:
                        failed.append((image_id, err))
                    else:
                        ids.append(image_id)
                        vecs.append(vec)
                arr = np.stack(vecs) if vecs else np.zeros((0, self.info.dim), np.float32)
                yield ids, arr.astype(np.float32, copy=False), failed
