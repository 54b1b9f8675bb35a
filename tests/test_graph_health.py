"""Graph health (issue 13, item 6): `vecstore propagate` warns when the k-NN graph cannot carry
a class's labels (its seeds sit in a small component) or leaves images without any seed, and
names the images to label to fix it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import make_image
from vecstore.learn.graph import graph_health
from vecstore.learn.propagation import LabelPropagation


def two_blobs(big: int, small: int, seed: int = 0) -> np.ndarray:
    """Rows around two orthogonal directions: no positive cosine between the blobs."""
    rng = np.random.default_rng(seed)
    dirs = np.eye(16)
    x = np.concatenate(
        [dirs[0] + 0.05 * rng.normal(size=(big, 16)), dirs[1] + 0.05 * rng.normal(size=(small, 16))]
    )
    x[:big, 1] = -np.abs(x[:big, 1])  # keep the cosines across the blobs at or below zero
    x[big:, 0] = -np.abs(x[big:, 0])
    return x.astype(np.float32)


def health_of(x: np.ndarray, y: np.ndarray, names: list[str], k: int = 5):
    lp = LabelPropagation(n_neighbors=k).fit(x, y)
    ids = np.arange(1000, 1000 + len(x))
    d = lp.label_distributions_
    return graph_health(lp.components_, lp.degree_, y, x, names=names, ids=ids, distributions=d)


def test_seeds_only_in_a_small_blob_warn_and_suggest_images_of_the_big_one():
    big, small = 80, 8
    x = two_blobs(big, small)
    y = np.full(big + small, -1)
    y[big], y[big + 1] = 0, 1  # both classes seeded in the small blob only
    h = health_of(x, y, ["one", "eight"])
    kinds = {w.kind for w in h.warnings}
    assert kinds >= {"isolated-class", "unseeded-component", "unreached"}
    isolated = {w.label: w for w in h.warnings if w.kind == "isolated-class"}
    assert set(isolated) == {"one", "eight"}
    w = isolated["one"]
    assert w.seeds == 1 and w.images == small and w.share == round(small / (big + small), 4)
    assert w.suggest and all(1000 <= i < 1000 + big for i in w.suggest)  # ids in the big blob
    unseeded = [w for w in h.warnings if w.kind == "unseeded-component"]
    assert unseeded and all(1000 <= i < 1000 + big for w in unseeded for i in w.suggest)
    assert sum(w.images for w in unseeded) == big == h.unreached
    assert h.reach == {"one": small, "eight": small}
    d = h.to_dict()
    assert json.loads(json.dumps(d)) == d and d["warnings"][0]["kind"]


def test_a_healthy_graph_gives_no_warning():
    big, small = 60, 40
    x = two_blobs(big, small, seed=1)
    y = np.full(big + small, -1)
    y[[0, 1]] = 0
    y[[big, big + 1]] = 1
    h = health_of(x, y, ["a", "b"])
    assert h.warnings == [] and h.unreached == 0
    assert h.reach == {"a": big, "b": small} and h.components == 2


def test_a_class_in_a_big_enough_component_is_not_isolated():
    # the same layout, but the small blob holds over half an even share: no class warning
    big, small = 60, 20
    x = two_blobs(big, small, seed=2)
    y = np.full(big + small, -1)
    y[0], y[big] = 0, 1
    h = health_of(x, y, ["a", "b"])
    assert not [w for w in h.warnings if w.kind == "isolated-class"]
    # a threshold raised past the small blob's share makes it one
    lp = LabelPropagation(n_neighbors=5).fit(x, y)
    strict = graph_health(lp.components_, lp.degree_, y, x, names=["a", "b"], isolation=1.0)
    assert [w.label for w in strict.warnings if w.kind == "isolated-class"] == ["b"]


def stripes(path: Path, seed: int) -> None:
    """A striped image, far (in pixels) from make_image's blobs."""
    rng = np.random.default_rng(seed)
    arr = np.zeros((32, 32), np.uint8)
    arr[::4] = 255
    arr = np.clip(arr.astype(int) + rng.integers(0, 12, arr.shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, "L").save(path)


def test_propagate_warns_and_records_the_health_in_the_run(tmp_path, cli, db):
    root = tmp_path / "scans"
    for i in range(6):  # the only "stripes" seed sits among 6 striped images
        stripes(root / "striped" / f"s{i}.png", seed=i)
    for i in range(50):
        make_image(root / "blobs" / f"b{i}.png", seed=3000 + i)
    assert cli("ingest", root, "--space", "pixels").exit_code == 0
    assert cli("labels", "set", root / "striped" / "s0.png", "stripes").exit_code == 0
    assert cli("labels", "set", root / "blobs" / "b0.png", "blobs", "--new-class").exit_code == 0
    r = cli("propagate", "--space", "pixels", "-k", "3")
    assert r.exit_code == 0, r.output
    line = next(ln for ln in r.output.splitlines() if "class 'stripes'" in ln)
    assert line.startswith("warning: the 1 seed of class 'stripes' sits in a component of 6 ")
    assert "10.7 % of the store" in line and "label some of these:" in line
    assert str(root / "blobs") in line and "vecstore suggest" in line
    assert "class 'blobs'" not in r.output
    (stats,) = db("SELECT stats FROM runs WHERE kind='propagate'")
    health = json.loads(stats[0])["health"]
    (w,) = [w for w in health["warnings"] if w["kind"] == "isolated-class"]
    assert w["label"] == "stripes" and w["images"] == 6 and w["seeds"] == 1
    assert len(w["suggest"]) == len(w["paths"]) > 0
    assert health["reach"] == {"stripes": 6, "blobs": 50}
    # JSON output carries it too
    out = json.loads(cli("propagate", "--space", "pixels", "-k", "3", "--json").stdout)
    assert out["health"]["warnings"] == health["warnings"]
