"""Shared fixtures: tiny images made with PIL in tmp_path, a CLI runner bound to a store."""

from __future__ import annotations

import csv
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from vecstore.cli import main
from vecstore.demo import digit_images


def make_image(path: Path, seed: int, size: int = 32, mode: str = "L") -> Path:
    """A random-looking but deterministic image with some structure (blobs), saved at path."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    arr = np.zeros((size, size), np.float64)
    for _ in range(3):
        cy, cx, r = rng.uniform(0, size, 2).tolist() + [rng.uniform(size / 8, size / 3)]
        arr += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    arr = (arr / arr.max() * 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(arr, "L")
    if mode != "L":
        img = img.convert(mode)
    img.save(path)
    return path


def make_binary_scans(root: Path, labeled_per_class: int, unlabeled: int) -> Path:
    """The imaging team's layout for a binary task: labeled/normal, labeled/cancer, unlabeled."""
    for i in range(labeled_per_class):
        make_image(root / "labeled" / "normal" / f"n{i}.png", seed=i)
        make_image(root / "labeled" / "cancer" / f"c{i}.png", seed=1000 + i, size=32)
    for i in range(unlabeled):
        make_image(root / "unlabeled" / f"u{i}.png", seed=2000 + i)
    return root


def migrate(store_path: Path, revision: str, *, down: bool = False) -> None:
    """Bring the store's database to schema ``revision`` with Alembic (up from nothing, or
    down from what it is): a store as an older vecstore left it."""
    from alembic import command

    from vecstore.db import alembic_config, make_engine

    store_path.mkdir(exist_ok=True)
    engine = make_engine(store_path / "vecstore.db")
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)
    engine.dispose()


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    """labeled/normal (3), labeled/cancer (3), unlabeled (4): the layout of the imaging team."""
    root = tmp_path / "scans"
    for i in range(3):
        make_image(root / "labeled" / "normal" / f"n{i}.png", seed=i)
        make_image(root / "labeled" / "cancer" / f"c{i}.png", seed=100 + i)
    for i in range(4):
        make_image(root / "unlabeled" / f"u{i}.png", seed=200 + i)
    return root


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def cli(store_path: Path) -> Callable[..., Result]:
    """Invoke `vecstore --store <tmp store> ARGS...` in-process."""
    runner = CliRunner()

    def invoke(*args: str, store: Path | None = None) -> Result:
        return runner.invoke(main, ["--store", str(store or store_path), *map(str, args)])

    return invoke


@pytest.fixture
def db(store_path: Path) -> Callable[[str], list[tuple]]:
    """Run a SQL query against the store's database (to check rows, not only text)."""

    def query(sql: str, *params) -> list[tuple]:
        con = sqlite3.connect(store_path / "vecstore.db")
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    return query


@pytest.fixture
def digits(tmp_path):
    """400 digits: 3 per class in labeled/<d>/, the rest in unlabeled/, truth.csv beside."""
    imgs, y = digit_images(scale=2)
    root = tmp_path / "digits"
    seen: dict[int, int] = {}
    rows = []
    for i in range(400):
        d = int(y[i])
        seen[d] = seen.get(d, 0) + 1
        p = root / ("labeled/" + str(d) if seen[d] <= 3 else "unlabeled") / f"d{i:04d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(imgs[i], "L").save(p)
        rows.append((str(p), d))
    with open(tmp_path / "truth.csv", "w", newline="") as f:
        csv.writer(f).writerows([("path", "label"), *rows])
    return root
