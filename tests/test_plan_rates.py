"""`vecstore plan` takes the embedding rate measured at the precision the space records, and
names device and precision in its assumptions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vecstore.db import Database
from vecstore.embedders.base import SpaceInfo
from vecstore.plan import MeasuredRate, measured_throughput
from vecstore.store import Store

SPACE = "resnet18-layer3"


def _store(store_path: Path, precision: str) -> Database:
    """An empty store with one CNN space recording ``precision`` (no model is run)."""
    Store.open(store_path, create=True).close()
    db = Database(store_path / "vecstore.db")
    info = SpaceInfo(SPACE, "resnet18", "layer3", 256, "test", precision=precision)
    with db.session() as s:
        db.spaces.ensure(s, info)
        s.commit()
    return db


def _embed_run(db: Database, stats: dict) -> int:
    """A finished embed run of SPACE with these stats; its id."""
    with db.runs.record("embed", SPACE, {}) as run:
        run.stats = {"failed": 0, "seconds": 1.0, **stats}
    return run.id


def _ingest_run(db: Database, entry: dict) -> int:
    """A finished ingest run whose stats["embedded"] holds this one entry for SPACE."""
    with db.runs.record("ingest", None, {}) as run:
        run.stats = {"embedded": [{"space": SPACE, "failed": 0, "seconds": 1.0, **entry}]}
    return run.id


def _plan(cli, *args) -> dict:
    r = cli("plan", "--space", SPACE, "--images", 360_000, "--budget-eur", 1000, *args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_plan_uses_the_rate_measured_at_the_space_precision(store_path, cli):
    db = _store(store_path, "fp32")
    fp32 = _embed_run(db, {"embedded": 128, "images_per_s": 32.7, "precision": "fp32"})
    bf16 = _embed_run(db, {"embedded": 5000, "images_per_s": 90.0, "precision": "bf16"})
    assert measured_throughput(db, SPACE) == {
        ("cpu", "fp32"): MeasuredRate(32.7, 128, fp32),
        ("cpu", "bf16"): MeasuredRate(90.0, 5000, bf16),
    }
    db.close()
    p = _plan(cli, "--eur-per-label", 1)
    assert p["compute"]["cpu"]["images_per_s"] == pytest.approx(32.7)  # not bf16's 90
    assert p["compute"]["cpu"]["hours"] == pytest.approx(360_000 / 32.7 / 3600)
    assert (
        f"this machine's CPU embeds {SPACE} (fp32) at 32.7 images/s (measured, run {fp32}, "
        "128 images); CPU time costs 0 EUR/h"
    ) in p["assumptions"]
    text = cli("plan", "--space", SPACE, "--images", 10, "--budget-eur", 5, "--eur-per-label", 1)
    assert f"  - this machine's CPU embeds {SPACE} (fp32) at 32.7 images/s" in text.output


def test_a_run_without_precision_counts_as_fp32(store_path, cli):
    db = _store(store_path, "fp32")
    old = _ingest_run(db, {"embedded": 200, "images_per_s": 40.0, "device": "cpu"})
    _embed_run(db, {"embedded": 100, "images_per_s": 55.0, "device": "cpu"})  # fewer images
    assert measured_throughput(db, SPACE) == {("cpu", "fp32"): MeasuredRate(40.0, 200, old)}
    db.close()
    p = _plan(cli, "--eur-per-label", 1)
    assert p["compute"]["cpu"]["images_per_s"] == pytest.approx(40.0)
    assert any(
        a.startswith(
            f"this machine's CPU embeds {SPACE} (fp32) at 40.0 images/s (measured, run {old}, "
            "200 images)"
        )
        for a in p["assumptions"]
    )


def test_the_gpu_line_names_the_precision(store_path, cli):
    db = _store(store_path, "bf16")
    _ingest_run(db, {"embedded": 64, "images_per_s": 20.0, "device": "cpu", "precision": "bf16"})
    _embed_run(
        db, {"embedded": 999, "images_per_s": 1500.0, "device": "cuda:0", "precision": "fp32"}
    )
    _embed_run(db, {"embedded": 500, "images_per_s": 2400.0, "device": "cuda", "precision": "bf16"})
    db.close()
    p = _plan(cli, "--eur-per-label", 1)
    assert p["compute"]["gpu"]["images_per_s"] == pytest.approx(2400.0)
    assert p["compute"]["gpu"]["measured"]
    assert (
        f"a GPU embeds {SPACE} (bf16) at 2400 images/s (measured) and costs 2.5 EUR/h"
        in (p["assumptions"])
    )
    assert any(
        a.startswith(f"this machine's CPU embeds {SPACE} (bf16) at 20.0") for a in p["assumptions"]
    )
    given = _plan(cli, "--eur-per-label", 1, "--gpu-images-per-s", 1000)
    assert (
        given["compute"]["gpu"]["images_per_s"] == 1000 and not given["compute"]["gpu"]["measured"]
    )
    assert (
        f"a GPU embeds {SPACE} (bf16) at 1000 images/s (given by --gpu-images-per-s, not "
        "measured) and costs 2.5 EUR/h"
    ) in given["assumptions"]


def test_rates_at_another_precision_are_not_used_silently(store_path, cli):
    db = _store(store_path, "fp16")
    cpu = _embed_run(db, {"embedded": 300, "images_per_s": 30.0, "precision": "fp32"})
    gpu = _embed_run(
        db, {"embedded": 300, "images_per_s": 900.0, "device": "cuda", "precision": "bf16"}
    )
    db.close()
    p = _plan(cli, "--eur-per-label", 1, "--gpu-images-per-s", 1000)
    assert set(p["compute"]) == {"gpu"} and not p["compute"]["gpu"]["measured"]
    assert (
        f"CPU rates of {SPACE} measured only at fp32 (run {cpu}), not at the fp16 the space "
        "records: not used"
    ) in p["assumptions"]
    assert (
        f"GPU rates of {SPACE} measured only at bf16 (run {gpu}), not at the fp16 the space "
        "records: not used"
    ) in p["assumptions"]
    r = cli("plan", "--space", SPACE, "--images", 10, "--budget-eur", 5, "--eur-per-label", 1)
    assert r.exit_code != 0
    assert (
        f"no measured embedding rate for space '{SPACE}' at its precision fp16 (measured only "
        "at bf16 on cuda, fp32 on cpu)"
    ) in r.output
