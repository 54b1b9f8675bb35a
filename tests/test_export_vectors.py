"""`vecstore export-vectors SPACE -o FILE.parquet`: the raw vectors of a space, one row per
usable image with a vector there, that `import-vectors` reads back into another store bit for
bit and pandas reads as is; written in chunks, whole or not at all, with clean errors."""

from __future__ import annotations

import io
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vecstore import Store
from vecstore.errors import BadInput, UnknownSpace

COLUMNS = ["path", "sha256", "image_id", "vector"]


@pytest.fixture
def small_chunks(monkeypatch):
    """Pages of 3 images (256-d spaces), so that a store of 10 images is written in several
    row groups."""
    import vecstore.export_vectors

    monkeypatch.setattr(vecstore.export_vectors, "CHUNK_VALUES", 3 * 256)


def _stored(store: Path, space: str) -> dict[str, bytes]:
    """path -> the stored vector's bytes, for every vector of ``space``."""
    with Store.open(store) as s:
        ids, x = s.vectors(s.get_space(space))
        paths = s.image_paths()
    return {paths[int(i)]: v.tobytes() for i, v in zip(ids, x)}


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_export_then_import_into_another_store_gives_the_same_vectors(
    image_dir, cli, store_path, tmp_path, small_chunks
):
    assert cli("ingest", image_dir, "--space", "pixels").exit_code == 0
    out = tmp_path / "pixels.parquet"
    r = cli("export-vectors", "pixels", "-o", out)
    assert r.exit_code == 0, r.output
    assert re.search(
        rf"wrote 10 vectors of space pixels \(256-d\) to {re.escape(str(out))}", r.output
    )
    assert pq.ParquetFile(out).metadata.num_row_groups == 4  # pages of 3, 3, 3, 1
    other = tmp_path / "other"
    r = cli("import-vectors", out, "--space", "pixels-copy", store=other)
    assert r.exit_code == 0, r.output
    assert "10 rows read, 10 new images" in r.output
    want, got = _stored(store_path, "pixels"), _stored(other, "pixels-copy")
    assert len(want) == 10 and got == want  # same paths, same bytes


def test_odd_float_values_come_back_bit_for_bit(tmp_path, cli, store_path):
    """-0.0, subnormals, the largest float32: an imported space exported and imported again."""
    odd = np.array([-0.0, 1e-45, -1e-45, 1.17549435e-38, 3.4028235e38, -3.4028235e38, 1 / 3])
    x = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32)
    x[0] = odd.astype(np.float32)
    emb = tmp_path / "emb.parquet"
    pd.DataFrame({"path": [f"/data/{i}.png" for i in range(5)], "vector": list(x)}).to_parquet(emb)
    assert cli("import-vectors", emb, "--space", "emb").exit_code == 0
    out = tmp_path / "out.parquet"
    assert cli("export-vectors", "emb", "-o", out).exit_code == 0
    back = pd.read_parquet(out)
    assert back["sha256"].isna().all()  # images known only from their vectors: no file read
    assert cli("import-vectors", out, "--space", "emb", store=tmp_path / "b").exit_code == 0
    want, got = _stored(store_path, "emb"), _stored(tmp_path / "b", "emb")
    assert got == want == {f"/data/{i}.png": x[i].tobytes() for i in range(5)}
    assert np.signbit(np.frombuffer(got["/data/0.png"], np.float32)[0])


def test_pandas_reads_one_row_per_usable_image_with_a_vector_in_the_space(
    image_dir, cli, db, store_path, tmp_path, small_chunks
):
    shutil.copy(image_dir / "labeled" / "normal" / "n0.png", image_dir / "n0-again.png")
    (image_dir / "unlabeled" / "broken.png").write_bytes(b"not an image")
    assert cli("ingest", image_dir, "--space", "pixels").exit_code == 0
    # a second space holding 2 of those images and one the store has not read
    some = [str(image_dir / "unlabeled" / f"u{i}.png") for i in range(2)] + ["/else/x.png"]
    sub = tmp_path / "sub.parquet"
    pd.DataFrame({"path": some, "vector": list(np.eye(3, 256, dtype=np.float32))}).to_parquet(sub)
    assert cli("import-vectors", sub, "--space", "sub").exit_code == 0
    out = tmp_path / "v.parquet"
    assert cli("export-vectors", "pixels", "-o", out).exit_code == 0
    df = pd.read_parquet(out)
    assert list(df.columns) == COLUMNS
    assert df["image_id"].dtype == np.int64 and df["path"].map(type).eq(str).all()
    n = db("SELECT COUNT(*) FROM vectors JOIN spaces ON spaces.id = space_id WHERE name = 'pixels'")
    assert len(df) == n[0][0] == 10  # not the broken file, not the copy, not /else/x.png
    stored = {i: (p, sha) for i, p, sha in db("SELECT id, path, sha256 FROM images")}
    assert {i: (p, s) for i, p, s in zip(df["image_id"], df["path"], df["sha256"])} == {
        i: stored[i] for i in df["image_id"]
    }  # the path as stored: one row for the two paths of n0
    assert df["image_id"].is_monotonic_increasing and df["sha256"].is_unique
    both = {str(image_dir / "labeled" / "normal" / "n0.png"), str(image_dir / "n0-again.png")}
    assert len(both & set(df["path"])) == 1
    broken = str(image_dir / "unlabeled" / "broken.png")
    assert db("SELECT status FROM images WHERE path = ?", broken) == [("failed",)]
    assert broken not in set(df["path"])
    raw = _stored(store_path, "pixels")
    for path, v in zip(df["path"], df["vector"]):
        assert v.dtype == np.float32 and len(v) == 256 and v.tobytes() == raw[path]
    assert not np.allclose(np.linalg.norm(np.stack(df["vector"]), axis=1), 1)  # raw, not unit
    schema = pq.read_schema(out)
    assert schema.field("vector").type == pa.list_(pa.float32())
    assert schema.metadata[b"vecstore.space"] == b"pixels"
    assert cli("export-vectors", "sub", "-o", tmp_path / "s.parquet").exit_code == 0
    assert sorted(pd.read_parquet(tmp_path / "s.parquet")["path"]) == sorted(some)


def test_an_unknown_space_is_a_clean_error(image_dir, cli, store_path, tmp_path):
    assert cli("ingest", image_dir, "--space", "pixels").exit_code == 0
    out = tmp_path / "v.parquet"
    r = cli("export-vectors", "resnet18", "-o", out)
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit)
    assert "Traceback" not in r.output
    assert r.stderr.startswith(
        "Error: space 'resnet18' is not in this store (it has: pixels); add it with "
        "`vecstore embed --space resnet18`"
    )
    assert not out.exists() and _leftovers(tmp_path) == []
    with Store.open(store_path) as store, pytest.raises(UnknownSpace):
        store.export_vectors("resnet18", out)


def test_an_output_that_is_a_folder_is_refused(image_dir, cli, store_path, tmp_path):
    assert cli("ingest", image_dir, "--space", "pixels").exit_code == 0
    folder = tmp_path / "folder"
    folder.mkdir()
    r = cli("export-vectors", "pixels", "-o", folder)
    assert r.exit_code != 0 and "is a directory" in r.output and "Traceback" not in r.output
    link = tmp_path / "to-folder"
    link.symlink_to(folder)
    with Store.open(store_path) as store:
        for target in (folder, link):
            with pytest.raises(BadInput, match="is a directory"):
                store.export_vectors("pixels", target)
    assert list(folder.iterdir()) == [] and link.is_symlink()


def test_a_missing_folder_is_made_as_for_every_output_and_one_that_cannot_be_is_an_error(
    image_dir, cli, tmp_path
):
    assert cli("ingest", image_dir, "--space", "pixels").exit_code == 0
    new = tmp_path / "new" / "deep" / "v.parquet"
    assert cli("export-vectors", "pixels", "-o", new).exit_code == 0
    assert len(pd.read_parquet(new)) == 10
    (tmp_path / "afile").write_text("a file, not a folder\n")
    target = tmp_path / "afile" / "v.parquet"
    r = cli("export-vectors", "pixels", "-o", target)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert re.search(rf"Error: cannot write {re.escape(str(target))}: .+\n", r.stderr), r.stderr
    assert _leftovers(tmp_path) == []


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(
    image_dir, cli, tmp_path, monkeypatch
):
    import vecstore.files

    assert cli("ingest", image_dir, "--space", "pixels").exit_code == 0
    out = tmp_path / "v.parquet"
    out.write_bytes(b"old")

    def fail(*_args, **_kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(vecstore.files.os, "replace", fail)
    r = cli("export-vectors", "pixels", "-o", out)
    assert r.exit_code == 1 and "No space left on device" in r.stderr
    assert out.read_bytes() == b"old" and _leftovers(tmp_path) == []


def test_dash_writes_the_parquet_file_to_standard_output(image_dir, cli, tmp_path, monkeypatch):
    assert cli("ingest", image_dir, "--space", "pixels").exit_code == 0
    monkeypatch.chdir(tmp_path)
    r = cli("export-vectors", "pixels", "-o", "-")
    assert r.exit_code == 0, r.output
    assert not os.path.exists(tmp_path / "-")
    assert "wrote 10 vectors" in r.stderr and b"wrote" not in r.stdout_bytes
    df = pq.read_table(io.BytesIO(r.stdout_bytes)).to_pandas()
    assert list(df.columns) == COLUMNS and len(df) == 10
