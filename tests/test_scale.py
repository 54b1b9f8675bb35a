"""Scale features: index choice and tuning, the approximate k-NN graph, import-vectors,
loading vectors straight from the database."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vecstore.learn.graph import knn_search
from vecstore.learn.knn import exact_knn
from vecstore.params import parse_size
from vecstore.search.choice import choose_index
from vecstore.store import Store

from .conftest import make_image


def mixture(
    n: int, dim: int = 32, clusters: int = 20, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Clusters on low-rank subspaces, like embeddings: an ANN index has real work to do."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, clusters, n)
    centers = rng.standard_normal((clusters, dim))
    bases = rng.standard_normal((clusters, dim, 6))
    x = centers[y] + np.einsum("ndr,nr->nd", bases[y], rng.standard_normal((n, 6))) * 0.5
    x += 0.1 * rng.standard_normal((n, dim))
    return x.astype(np.float32), y


def write_npy(folder: Path, x: np.ndarray, names=None) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "x.npy", x)
    names = names or [f"img/{i:05d}.png" for i in range(len(x))]
    (folder / "paths.txt").write_text("".join(f"{p}\n" for p in names))
    return folder / "x.npy", folder / "paths.txt"


# ---- index choice --------------------------------------------------------------------------
def test_choose_index_follows_size_dimension_and_budget():
    small = choose_index(1500, 2048)
    assert small.exact and small.factory == "Flat"
    big = choose_index(1_000_000, 512, 8 * 2**30)
    assert big.factory == "IVF2048,SQ8" and not big.exact  # 2 sqrt(1M) lists
    assert choose_index(4_000_000, 2048, 6 * 2**30).factory == "IVF4096,SQ4"  # 8 GB of SQ8 > 6 GiB
    pq = choose_index(4_000_000, 2048, 2 * 2**30)
    assert (
        pq.factory == "IVF4096,PQ256" and pq.bytes <= 2 * 2**30 and "product quantisation" in pq.why
    )


def test_parse_size():
    assert parse_size("8G") == 8 * 2**30 and parse_size("512M") == 512 * 2**20
    assert parse_size("2.5GiB") == int(2.5 * 2**30) and parse_size("1000") == 1000
    with pytest.raises(ValueError, match="cannot read 'lots'"):
        parse_size("lots")


# ---- k-NN graph ----------------------------------------------------------------------------
def test_exact_knn_matches_brute_force_and_leaves_out_excluded_rows():
    rng = np.random.default_rng(3)
    db = rng.standard_normal((300, 16)).astype(np.float32)
    q = db[:40]
    sims, idx = exact_knn(q, db, 5, exclude=np.arange(40))
    scores = q @ db.T
    scores[np.arange(40), np.arange(40)] = -np.inf
    want = np.argsort(-scores, axis=1)[:, :5]
    assert (idx == want).all()
    assert np.allclose(sims, np.take_along_axis(scores, want, axis=1), atol=1e-5)
    # more neighbours asked than there are rows: the missing ones are -1 / 0
    s2, i2 = exact_knn(db[:2], db[:3], 5, exclude=np.array([0, 1]))
    assert i2.shape == (2, 3) and (i2[:, 2] == -1).all() and (s2[:, 2] == 0).all()
    assert set(i2[0, :2]) == {1, 2} and set(i2[1, :2]) == {0, 2}


def test_ivf_self_join_reaches_its_recall_target_and_reports_it():
    x, _ = mixture(6000)
    sims, nbrs, stats = knn_search(x, 10, exact_max=1000, return_stats=True)
    assert stats.method == "ivf-self-join" and stats.nprobe < stats.nlist and stats.recall >= 0.95
    _, exact, ex_stats = knn_search(x, 10, return_stats=True)
    assert ex_stats.method == "exact"
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(nbrs, exact)])
    assert recall >= 0.95  # measured on all rows, not only the tuning sample
    assert not (nbrs == np.arange(len(x))[:, None]).any()  # never itself
    assert (nbrs >= 0).all() and np.all(np.diff(sims, axis=1) <= 1e-6)  # sorted, no padding


# ---- index building, tuning, settings --------------------------------------------------------
def test_reindex_with_a_factory_tunes_and_records_recall(tmp_path, cli, db):
    x, _ = mixture(3000)
    npy, paths = write_npy(tmp_path / "emb", x)
    r = cli("import-vectors", npy, "--paths", paths, "--space", "emb")
    assert r.exit_code == 0, r.output
    assert "3000 new images" in r.output and "index: Flat" in r.output
    r = cli("reindex", "--space", "emb", "--index", "IVF32,Flat")
    assert r.exit_code == 0, r.output
    info = json.loads(cli("info", "--json").output)["spaces"][0]
    assert info["index_type"] == "IVF32,Flat" and info["index_setting"] == "IVF32,Flat"
    assert info["index_recall_at_10"] >= 0.95 and info["index_recall_sample"] == 1000
    assert 1 <= info["index_params"]["nprobe"] < 32
    assert f"nprobe={info['index_params']['nprobe']}, recall@10" in cli("info").output
    assert db("SELECT index_factory FROM spaces") == [("IVF32,Flat",)]
    # the index answers queries and agrees with the database
    r = cli("query", "--id", "5", "--space", "emb", "-k", "3", "--json")
    assert r.exit_code == 0, r.output
    assert len(r.output.strip().splitlines()) == 3
    assert "index and database agree on 3000 ids" in cli("check").output
    # HNSW: tuned by efSearch
    assert cli("reindex", "--index", "HNSW16").exit_code == 0
    info = json.loads(cli("info", "--json").output)["spaces"][0]
    assert "efSearch" in info["index_params"] and info["index_recall_at_10"] >= 0.95
    # back to the automatic choice
    assert cli("reindex", "--index", "auto").exit_code == 0
    assert json.loads(cli("info", "--json").output)["spaces"][0]["index_type"] == "Flat"
    # bad settings: clear errors, nothing changed
    r = cli("reindex", "--index", "IVFbogus")
    assert r.exit_code == 1 and "FAISS cannot build index 'IVFbogus'" in r.output
    r = cli("reindex", "--memory-budget", "lots")
    assert r.exit_code == 2 and "cannot read 'lots' as a size" in r.output
    r = cli("reindex", "--index", "IVF4096,Flat")
    assert r.exit_code == 1 and "needs at least 4096 vectors" in r.output


def test_index_switches_to_ivf_when_the_space_grows(tmp_path, cli):
    """Past 32 MiB of vectors the automatic choice is IVF: the store rebuilds on its own."""
    x, _ = mixture(20000, dim=512, clusters=50)
    npy, paths = write_npy(tmp_path / "a", x[:12000], [f"img/{i:05d}.png" for i in range(12000)])
    assert cli("import-vectors", npy, "--paths", paths, "--space", "emb").exit_code == 0
    assert json.loads(cli("info", "--json").output)["spaces"][0]["index_type"] == "Flat"
    npy, paths = write_npy(
        tmp_path / "b", x[12000:], [f"img/{i:05d}.png" for i in range(12000, 20000)]
    )
    r = cli("import-vectors", npy, "--paths", paths, "--space", "emb", "--base", tmp_path / "a")
    assert r.exit_code == 0, r.output
    info = json.loads(cli("info", "--json").output)["spaces"][0]
    assert (
        info["vectors"] == 20000
        and info["index_type"].startswith("IVF")
        and info["index_type"].endswith(",SQ8")
    )
    assert info["index_recall_at_10"] >= 0.95 and info["index_built_for"] == 20000
    assert "index and database agree on 20000 ids" in cli("check").output


# ---- import-vectors --------------------------------------------------------------------------
def test_import_npy_is_idempotent_and_vectors_load_back_exactly(tmp_path, cli, db, store_path):
    x, _ = mixture(500)
    npy, paths = write_npy(tmp_path / "emb", x)
    assert cli("import-vectors", npy, "--paths", paths, "--space", "clip").exit_code == 0
    r = cli("import-vectors", npy, "--paths", paths, "--space", "clip", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["new_images"] == 0 and rep["skipped_already_imported"] == 500
    assert db("SELECT count(*) FROM images") == [(500,)] and db("SELECT count(*) FROM vectors") == [
        (500,)
    ]
    assert db("SELECT model, dim FROM spaces") == [("imported", 32)]
    with Store.open(store_path) as st:
        ids, got = st.vectors(st.get_space("clip"))
        paths_by_id = dict(db("SELECT id, path FROM images"))
    order = [int(Path(paths_by_id[i]).stem) for i in ids]
    np.testing.assert_array_equal(got, x[order])  # raw float32, bit for bit
    assert paths_by_id[ids[0]] == str(
        (Path.cwd() / "img/00000.png").resolve()
    )  # relative to the cwd


def test_import_parquet_then_ingest_the_files_keeps_the_image(tmp_path, cli, db):
    folder = tmp_path / "scans"
    files = [make_image(folder / f"s{i}.png", seed=i) for i in range(4)]
    x, _ = mixture(4, dim=8)
    pd.DataFrame({"file": [f.name for f in files], "emb": list(x)}).to_parquet(
        tmp_path / "e.parquet"
    )
    r = cli(
        "import-vectors",
        tmp_path / "e.parquet",
        "--space",
        "gpu-model",
        "--path-column",
        "file",
        "--vector-column",
        "emb",
        "--base",
        folder,
    )
    assert r.exit_code == 0, r.output
    before = dict(db("SELECT path, id FROM images"))
    assert db("SELECT count(*) FROM images WHERE sha256 IS NULL") == [(4,)]
    r = cli("ingest", folder, "--space", "hog")
    assert r.exit_code == 0, r.output
    assert dict(db("SELECT path, id FROM images")) == before  # same images, now with their hash
    assert db("SELECT count(*) FROM images WHERE sha256 IS NULL") == [(0,)]
    assert db(
        "SELECT s.name, count(*) FROM vectors v JOIN spaces s ON s.id = v.space_id GROUP BY s.name "
        "ORDER BY s.name"
    ) == [("gpu-model", 4), ("hog", 4)]


def test_import_refuses_bad_files_and_writes_nothing(tmp_path, cli, db, store_path):
    x, _ = mixture(10, dim=4)
    npy, paths = write_npy(tmp_path / "ok", x)
    cases = []
    bad = x.copy()
    bad[6, 2] = np.nan
    n2, p2 = write_npy(tmp_path / "nan", bad)
    cases.append(((n2, "--paths", p2), "row 7 holds NaN"))
    n3, p3 = write_npy(tmp_path / "short", x, [f"a{i}.png" for i in range(9)])
    cases.append(((n3, "--paths", p3), "has 9 paths but"))
    n4, p4 = write_npy(tmp_path / "dup", x, [f"a{i}.png" for i in range(9)] + ["a3.png"])
    cases.append(((n4, "--paths", p4), "line 10 repeats the path of line 4"))
    cases.append(((npy,), "give the image paths with --paths"))
    pd.DataFrame({"p": ["a"], "v": [[1.0, 2.0]]}).to_parquet(tmp_path / "w.parquet")
    cases.append(((tmp_path / "w.parquet",), "has no column 'path', 'vector' (its columns: p, v)"))
    (tmp_path / "t.txt").write_text("x")
    cases.append(((tmp_path / "t.txt",), "expected a .npy file"))
    for args, message in cases:
        r = cli("import-vectors", *args, "--space", "emb")
        assert r.exit_code == 1 and message in r.output, (args, r.output)
    assert not (store_path / "vecstore.db").exists() or db("SELECT count(*) FROM vectors") == [(0,)]
    # a built-in space name, and a dimension that does not match the space
    assert "built-in space" in cli("import-vectors", npy, "--paths", paths, "--space", "hog").output
    assert cli("import-vectors", npy, "--paths", paths, "--space", "emb").exit_code == 0
    n5, p5 = write_npy(tmp_path / "wide", np.ones((10, 5), np.float32))
    r = cli("import-vectors", n5, "--paths", p5, "--space", "emb")
    assert r.exit_code == 1 and "space 'emb' has dimension 4" in r.output
    assert db("SELECT count(*) FROM vectors") == [(10,)]


def test_propagation_on_a_large_space_uses_the_approximate_graph(tmp_path, cli, db):
    """Above the exact limit, propagate runs on the IVF self-join and records its recall."""
    x, y = mixture(24000, dim=16, clusters=4)
    npy, paths = write_npy(tmp_path / "emb", x)
    assert cli("import-vectors", npy, "--paths", paths, "--space", "emb").exit_code == 0
    rng = np.random.default_rng(0)
    seeds = rng.choice(len(x), 40, replace=False)
    (tmp_path / "l.csv").write_text(
        "path,label\n" + "".join(f"{Path.cwd() / f'img/{i:05d}.png'},c{y[i]}\n" for i in seeds)
    )
    assert cli("labels", "import", tmp_path / "l.csv", "--new-class").exit_code == 0
    r = cli("propagate", "--space", "emb", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["graph"]["method"] == "ivf-self-join" and out["graph"]["recall"] >= 0.95
    assert (
        set(out["seconds"]) == {"load", "graph", "solve", "write"} and out["seconds"]["graph"] > 0
    )
    pred = dict(db("SELECT i.path, p.label FROM predictions p JOIN images i ON i.id = p.image_id"))
    right = np.mean(
        [pred[str(Path.cwd() / f"img/{i:05d}.png")] == f"c{y[i]}" for i in range(len(x))]
    )
    assert right >= 0.9
