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


def read_truth(path: str | os.PathLike[str]) -> dict[str, str]:
    """path -> true label from a truth CSV written by :func:`write_digits`."""
    with open(path, newline="") as f:
        return {row["path"]: row["label"] for row in csv.DictReader(f)}


def neighbour_agreement(store, space: str, truth: dict[str, str], k: int = 10) -> dict[str, float]:
    """How often an image's nearest neighbours share its true label (precision@1 and @k)."""
    from sqlalchemy import select

    from .models import Image

    ids, nn, _ = store.neighbours(space, k)
    with store.session() as s:
        path_of = dict(s.execute(select(Image.id, Image.path)).all())
    label_of = {i: truth.get(path_of.get(i, "")) for i in path_of}
    own = np.array([label_of.get(int(i)) for i in ids], dtype=object)
    got = np.array([[label_of.get(int(j)) for j in row] for row in nn], dtype=object)
    same = got == own[:, None]
    return {"p@1": float(same[:, 0].mean()), f"p@{k}": float(same.mean())}
