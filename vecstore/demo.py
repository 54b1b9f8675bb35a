"""Built-in demo data: scikit-learn's digits (1,797 8x8 images) written as PNG files."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
from PIL import Image


def digit_images(scale: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """The digits as uint8 gray images (8*scale pixels square, nearest-neighbour) and targets."""
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)
    if scale > 1:
        imgs = imgs.repeat(scale, axis=1).repeat(scale, axis=2)
    return imgs, d.target.astype(int)


def write_digits(
    out: str | os.PathLike[str],
    *,
    labeled_per_class: int = 0,
    scale: int = 4,
    seed: int = 0,
) -> dict[str, int]:
    """Write the digits as PNGs.

    With ``labeled_per_class`` = 0 every image goes to ``<out>/digits/``. Otherwise
    ``labeled/<digit>/`` holds that many images per digit (the expert labels) and
    ``unlabeled/`` the rest, whose true labels go to ``truth.csv`` (path,label) for evaluation.
    """
    out = Path(out)
    imgs, y = digit_images(scale)
    rng = np.random.default_rng(seed)
    labeled: set[int] = set()
    if labeled_per_class:
        for c in np.unique(y):
            idx = np.flatnonzero(y == c)
            labeled.update(int(i) for i in rng.choice(idx, labeled_per_class, replace=False))
    truth_rows = []
    for i, (img, target) in enumerate(zip(imgs, y)):
        if not labeled_per_class:
            p = out / "digits" / f"digit_{i:04d}.png"
        elif i in labeled:
            p = out / "labeled" / str(target) / f"digit_{i:04d}.png"
        else:
            p = out / "unlabeled" / f"digit_{i:04d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, "L").save(p)
        truth_rows.append((str(p.resolve()), int(target)))
    with open(out / "truth.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        w.writerows(truth_rows)
    return {"images": len(imgs), "labeled": len(labeled)}
