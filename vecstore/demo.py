"""The demo: scikit-learn's digits (1,797 8x8 images) written as PNG files, and the whole
pipeline run on them through the Store's public API, as a notebook would."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .params import ClusterParams, ExportOptions
from .results import Export, IngestReport

if TYPE_CHECKING:  # pragma: no cover
    from .store import Store


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


def neighbour_agreement(
    store: Store, space: str, truth: dict[str, str], k: int = 10
) -> dict[str, float]:
    """How often an image's nearest neighbours share its true label (precision@1 and @k)."""
    ids, nn, _ = store.neighbours(space, k)
    path_of = store.image_paths()
    label_of = {i: truth.get(path_of.get(i, "")) for i in path_of}
    own = np.array([label_of.get(int(i)) for i in ids], dtype=object)
    got = np.array([[label_of.get(int(j)) for j in row] for row in nn], dtype=object)
    same = got == own[:, None]
    return {"p@1": float(same[:, 0].mean()), f"p@{k}": float(same.mean())}


@dataclass
class DemoResult:
    images: int
    labeled: int
    ingest: IngestReport
    examples: list[tuple[str, str, list[str]]]  # (file name, true digit, neighbours' digits)
    rows: list[dict[str, Any]]  # the summary table, one row per space
    best: str  # the space whose pseudo-labels were exported
    export: Export


def run_demo(store: Store, out: Path, spaces: Sequence[str], k: int) -> DemoResult:
    """The whole pipeline on the digits: write them (2 labeled per digit), ingest them, find
    similar images, then per space cluster (k-means, spectral), propagate, evaluate against
    the truth, and export the pseudo-labels of the best space."""
    counts = write_digits(out, labeled_per_class=2)
    rep = store.ingest(out, list(spaces), labels_from_folders=True, progress=True)
    truth_paths = read_truth(out / "truth.csv")
    examples = []
    for path in sorted(truth_paths)[:: max(1, len(truth_paths) // 4)][:4]:
        res = store.query(path=path, space=spaces[0], k=k)
        got = [truth_paths.get(h.path, "?") for h in res.hits]
        examples.append((Path(path).name, truth_paths[path], got))
    truth = store.read_truth(out / "truth.csv")
    rows = [_space_row(store, sp, truth, truth_paths, k) for sp in spaces]
    best = max(rows, key=lambda r: r["propagation acc"])["space"]
    exported = store.export(out / "pseudo_labels.csv", ExportOptions(space=best))
    return DemoResult(counts["images"], counts["labeled"], rep, examples, rows, best, exported)


def _space_row(
    store: Store, space: str, truth: dict[int, str], truth_paths: dict[str, str], k: int
) -> dict[str, Any]:
    agree = neighbour_agreement(store, space, truth_paths, k)
    km = store.cluster(space, ClusterParams(k=10), truth=truth).metrics
    spec = store.cluster(space, ClusterParams(k=10, method="spectral"), truth=truth).metrics
    store.propagate(space)
    ev = store.evaluate(space, truth=truth)
    rv = ev.review
    return {
        "space": space,
        f"p@{k}": agree[f"p@{k}"],
        "AMI kmeans": km["ami"],
        "AMI spectral": spec["ami"],
        "propagation acc": ev.scores.accuracy,
        "flagged share": rv.flag_share if rv.flag_share is not None else 1.0,
        "unflagged acc": rv.expected_accuracy,
    }
