"""`--precision fp32|bf16|fp16`: a CNN space's forward pass in float32 or autocast to a 16-bit
type, recorded by the space and held for its later vectors (random weights, recorded as
such; the bf16-vs-fp32 figure of bench/precision.py is in bench/BENCHMARKS.md)."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from .conftest import make_image, migrate

SPACE = "resnet18-layer3"


def vectors(db) -> dict[int, np.ndarray]:
    rows = db(
        "SELECT v.image_id, v.vector FROM vectors v JOIN spaces s ON s.id = v.space_id "
        "WHERE s.name = ?",
        SPACE,
    )
    return {i: np.frombuffer(v, np.float32) for i, v in rows}


def embed(cli, *args, store=None):
    return cli("embed", "--space", SPACE, "--weights", "random", *args, store=store)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_16_bit_space_records_its_precision_and_keeps_the_fp32_directions(
    image_dir, cli, db, tmp_path, precision
):
    fp32_store = tmp_path / "fp32"
    for store in (None, fp32_store):
        assert cli("ingest", image_dir, "--space", "hog", store=store).exit_code == 0
    r = embed(cli, "--precision", precision)
    assert r.exit_code == 0, r.output
    assert embed(cli, store=fp32_store).exit_code == 0
    assert db("SELECT name, precision FROM spaces ORDER BY name") == [
        ("hog", "fp32"),
        (SPACE, precision),
    ]
    low = vectors(db)
    ref = vectors(
        lambda sql, *p: sqlite3.connect(fp32_store / "vecstore.db").execute(sql, p).fetchall()
    )
    assert low.keys() == ref.keys() and len(low) == 10
    for i in ref:
        cos = low[i] @ ref[i] / np.linalg.norm(low[i]) / np.linalg.norm(ref[i])
        assert cos >= 0.99, (i, cos)  # bench: >= 0.9999 on this machine; 0.99 leaves room
        assert not np.array_equal(low[i], ref[i])  # 16-bit really ran


def test_a_space_keeps_its_precision_and_refuses_another(image_dir, cli, db, tmp_path):
    assert cli("ingest", image_dir, "--space", "hog").exit_code == 0
    assert embed(cli, "--precision", "bf16").exit_code == 0
    before = db("SELECT COUNT(*) FROM vectors")
    r = cli("embed", "--space", SPACE, "--precision", "fp32")
    assert r.exit_code == 1 and "computed in bf16" in r.output and "Traceback" not in r.output
    assert db("SELECT COUNT(*) FROM vectors") == before
    (image_dir / "more").mkdir()
    (image_dir / "more" / "x.png").write_bytes((image_dir / "unlabeled" / "u0.png").read_bytes())
    make_image(image_dir / "more" / "y.png", seed=999)
    r = cli("ingest", image_dir)  # every space of the store, each in its own precision
    assert r.exit_code == 0, r.output
    assert db("SELECT precision FROM spaces WHERE name = ?", SPACE) == [("bf16",)]
    assert len(vectors(db)) == 11
    r = cli("info")
    assert "random:seed=0 (RANDOM), bf16" in r.output, r.output


def test_descriptors_ignore_the_precision_of_a_run_that_also_embeds_a_cnn(image_dir, cli, db):
    args = ("--space", "hog", "--space", SPACE, "--weights", "random", "--precision", "bf16")
    r = cli("ingest", image_dir, *args)
    assert r.exit_code == 0, r.output
    assert dict(db("SELECT name, precision FROM spaces")) == {"hog": "fp32", SPACE: "bf16"}


def test_a_store_from_before_records_fp32_for_its_spaces(image_dir, cli, db, store_path):
    """Migration 0007 gives every existing space fp32, what its vectors were made in."""
    assert cli("ingest", image_dir, "--space", "hog").exit_code == 0
    migrate(store_path, "0006", down=True)
    assert "precision" not in {r[1] for r in db("PRAGMA table_info(spaces)")}
    assert cli("info").exit_code == 0  # opening upgrades to head
    assert db("SELECT name, precision FROM spaces") == [("hog", "fp32")]
