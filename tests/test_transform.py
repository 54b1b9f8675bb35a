"""A vector transform per space (`vecstore transform`): the math of centring and PCA
whitening on arrays, then through the store and the CLI: queries, the matrix the labeling
workflows read, the index cache, the run log, `info`, and the errors."""

from __future__ import annotations

import json
import shutil

import faiss
import numpy as np
import pytest
from PIL import Image
from sklearn.decomposition import PCA

import vecstore.learn.transform as transform_module
from vecstore.db.lock import WriteLock
from vecstore.errors import StoreReadOnly
from vecstore.learn.knn import exact_knn, normalize
from vecstore.learn.transform import VectorTransform, prepare
from vecstore.params import ParamError
from vecstore.store import Store

from .conftest import make_image

# ---- the math, on arrays ------------------------------------------------------------------


def offset_set() -> np.ndarray:
    """Every row is a big common offset (50 on axis 0) plus a small part that tells them
    apart. Row 0 is the query; row 1 points the same way as it, three times as far; row 2
    is nearer to it but points elsewhere; rows 3-5 mirror 0-2 so that the mean is the
    offset itself."""
    parts = np.array([[1, 0], [3, 0], [0.5, 0.5]], np.float64)
    parts = np.concatenate([parts, -parts])
    return np.hstack([np.full((6, 1), 50.0), parts]).astype(np.float32)


def nearest_to_row0(x: np.ndarray) -> int:
    _, rows = exact_knn(x[:1], x, 1, exclude=np.array([0]))
    return int(rows[0, 0])


def test_centring_ranks_by_the_real_difference_not_by_the_common_offset():
    x = offset_set()
    assert nearest_to_row0(normalize(x)) == 2  # raw cosine: the offset dominates, nearest wins
    t = VectorTransform.fit(x, "center")
    np.testing.assert_allclose(t.mean, [50, 0, 0], atol=1e-5)
    centred = t.apply(x)
    assert nearest_to_row0(centred) == 1  # same direction once the offset is gone
    np.testing.assert_allclose(centred[0] @ centred[1], 1.0, atol=1e-6)
    np.testing.assert_allclose(centred[0] @ centred[2], np.sqrt(0.5), atol=1e-6)
    assert t.describe() == "mean-centred" and t.dim_out == 3 and t.components is None


def correlated(n: int = 600, d: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + 5.0).astype(np.float32)


def test_pca_whitens_to_n_dims_with_unit_variance_and_matches_scikit_learn():
    x = correlated()
    t = VectorTransform.fit(x, "pca", n_components=5, seed=1)
    assert (t.dim_in, t.dim_out, t.components.shape) == (20, 5, (5, 20))
    assert t.describe() == "PCA-whitened to 5 dims" and t.fitted_on == 600
    z = (x - t.mean) @ t.components.T  # before the normalisation
    np.testing.assert_allclose(np.cov(z, rowvar=False), np.eye(5), atol=1e-3)
    y = t.apply(x)
    assert y.dtype == np.float32 and y.shape == (600, 5)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-5)
    reference = PCA(5, whiten=True, random_state=1).fit(x).transform(x)
    np.testing.assert_allclose(y, normalize(reference.astype(np.float32)), atol=1e-4)
    assert 0 < t.params["explained_variance_ratio"] <= 1


def test_apply_in_chunks_equals_apply_at_once(monkeypatch):
    x = correlated(n=1000)
    pca, centre = VectorTransform.fit(x, "pca", 7), VectorTransform.fit(x, "center")
    whole = [pca.apply(x), centre.apply(x)]
    monkeypatch.setattr(transform_module, "APPLY_ROWS", 64)
    np.testing.assert_allclose(pca.apply(x), whole[0], atol=1e-6)
    np.testing.assert_allclose(centre.apply(x), whole[1], atol=1e-6)
    copy = x.copy()
    assert centre.apply(copy, inplace=True) is copy  # a centring may reuse the caller's array
    np.testing.assert_allclose(copy, whole[1], atol=1e-6)
    assert not np.shares_memory(pca.apply(x), x)
    np.testing.assert_allclose(prepare(x, None), normalize(x))  # no transform: cosine only


def test_the_pca_is_fitted_on_a_seeded_sample_of_rows(monkeypatch):
    monkeypatch.setattr(transform_module, "MAX_FIT_ROWS", 100)
    x = correlated(n=400)
    a, b = VectorTransform.fit(x, "pca", 4, seed=0), VectorTransform.fit(x, "pca", 4, seed=0)
    other = VectorTransform.fit(x, "pca", 4, seed=1)
    assert a.fitted_on == 100
    assert a.fingerprint() == b.fingerprint() != other.fingerprint()
    assert VectorTransform.fit(x, "center").fitted_on == 400  # a mean takes every row


@pytest.mark.parametrize(
    ("kind", "n", "words"),
    [
        ("pca", 0, "at least 1"),
        ("pca", 21, "between 1 and 20"),  # 20 dimensions
        ("pca", None, "is needed for a PCA"),
        ("center", 3, "for a PCA only"),
        ("whiten", None, "is not one of raw, center, pca"),
    ],
)
def test_bad_fits_raise_a_clear_value_error(kind, n, words):
    with pytest.raises(ValueError, match=words):
        VectorTransform.fit(correlated(n=50), kind, n_components=n)


def test_a_pca_keeps_at_most_as_many_components_as_rows_and_needs_two_rows():
    x = correlated(n=6)
    with pytest.raises(ParamError, match="between 1 and 6"):
        VectorTransform.fit(x, "pca", 7)
    with pytest.raises(ParamError, match="2 vectors or more"):
        VectorTransform.fit(x[:1], "center")
    with pytest.raises(ValueError, match="rows of 20 values"):
        VectorTransform.fit(x, "center").apply(np.zeros((2, 3), np.float32))


# ---- through the store and the CLI --------------------------------------------------------


def _ingest(cli, folder):
    result = cli("ingest", folder, "--space", "pixels", "--labels-from-folders")
    assert result.exit_code == 0, result.output


def _raw(store_path) -> tuple[np.ndarray, np.ndarray]:
    with Store.open(store_path) as store:
        return store.vectors(store.get_space("pixels"))


def _hits(cli, *args) -> list[dict]:
    result = cli("query", *args, "--json")
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def _expected_hits(ids: np.ndarray, rows: np.ndarray, query_id: int, k: int) -> list:
    """(id, similarity) of the k rows most similar to ``query_id``'s, itself left out."""
    q = rows[list(ids).index(query_id)]
    sims = rows @ q
    order = [i for i in np.argsort(-sims, kind="stable") if ids[i] != query_id][:k]
    return [(int(ids[i]), float(sims[i])) for i in order]


def _assert_hits(got: list[dict], want: list) -> None:
    assert [h["id"] for h in got] == [i for i, _ in want]
    np.testing.assert_allclose([h["similarity"] for h in got], [s for _, s in want], atol=1e-4)


def _transform(cli, *args) -> dict:
    result = cli("transform", "--space", "pixels", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _index_file(store_path) -> tuple[int, str]:
    """(dimension, transform fingerprint) of the saved index of space pixels."""
    index = faiss.read_index(str(store_path / "index" / "pixels.faiss"))
    meta = json.loads((store_path / "index" / "pixels.json").read_text())
    return index.d, meta["transform"]


def test_after_center_queries_rank_by_the_centred_cosine_and_raw_restores_it(
    image_dir, cli, store_path
):
    _ingest(cli, image_dir)
    ids, x = _raw(store_path)
    centred = normalize(x - x.astype(np.float64).mean(axis=0).astype(np.float32))
    differ = [  # images whose neighbours the choice changes
        int(i)
        for i in ids
        if [h for h, _ in _expected_hits(ids, normalize(x), i, 5)]
        != [h for h, _ in _expected_hits(ids, centred, i, 5)]
    ]
    assert differ
    q = differ[0]
    raw_hits = _expected_hits(ids, normalize(x), q, 5)
    centred_hits = _expected_hits(ids, centred, q, 5)
    _assert_hits(_hits(cli, "--id", q, "-k", 5), raw_hits)

    done = _transform(cli, "--center")
    assert done["kind"] == "center" and done["fitted_on"] == len(ids) == done["vectors"]
    _assert_hits(_hits(cli, "--id", q, "-k", 5), centred_hits)
    with Store.open(store_path) as store:  # what clustering, propagation, suggest... read
        sp, mids, m = store.matrix("pixels")
        nb_ids, nb, sims = store.neighbours("pixels", 3)
    np.testing.assert_array_equal(mids, ids)
    np.testing.assert_allclose(m, centred, atol=1e-5)
    row = list(ids).index(q)
    assert nb[row].tolist() == [i for i, _ in _expected_hits(ids, centred, q, 3)]

    _transform(cli, "--raw")
    _assert_hits(_hits(cli, "--id", q, "-k", 5), raw_hits)
    with Store.open(store_path) as store:
        np.testing.assert_allclose(store.matrix("pixels")[2], normalize(x), atol=1e-6)


def test_the_index_is_rebuilt_under_each_transform_and_recorded_as_a_run(
    image_dir, cli, store_path, db
):
    _ingest(cli, image_dir)
    ids, x = _raw(store_path)
    assert _index_file(store_path) == (x.shape[1], "raw")
    done = _transform(cli, "--pca", 8, "--seed", 3)
    assert (done["dim_in"], done["dim_out"], done["index"]["n"]) == (x.shape[1], 8, len(ids))
    dim, fp = _index_file(store_path)
    assert dim == 8 and fp != "raw"
    with Store.open(store_path) as store:
        assert store.matrix("pixels")[2].shape == (len(ids), 8)
    hits = _hits(cli, "--id", int(ids[0]), "-k", 3)
    reference = PCA(8, whiten=True, random_state=3).fit(x).transform(x).astype(np.float32)
    _assert_hits(hits, _expected_hits(ids, normalize(reference), int(ids[0]), 3))
    (params, stats) = db("SELECT params, stats FROM runs WHERE kind = 'transform'")[0]
    assert json.loads(params) == {"kind": "pca", "n_components": 8, "seed": 3}
    stats = json.loads(stats)
    assert stats["kind"] == "pca" and stats["dim_out"] == 8 and stats["fitted_on"] == len(ids)
    assert db("SELECT kind, dim_in, dim_out FROM space_transforms") == [("pca", x.shape[1], 8)]

    _transform(cli, "--raw")
    assert _index_file(store_path) == (x.shape[1], "raw")
    assert db("SELECT count(*) FROM space_transforms") == [(0,)]
    assert [r[0] for r in db("SELECT status FROM runs WHERE kind = 'transform'")] == ["done"] * 2


def test_an_index_file_saved_under_another_transform_is_not_used(image_dir, cli, store_path):
    """As if a process had died between keeping the transform and saving the index: the
    file saved under the raw cosine is left, and must not answer a centred query."""
    _ingest(cli, image_dir)
    folder = store_path / "index"
    shutil.copy(folder / "pixels.faiss", store_path / "raw.faiss")
    shutil.copy(folder / "pixels.json", store_path / "raw.json")
    _transform(cli, "--center")
    shutil.copy(store_path / "raw.faiss", folder / "pixels.faiss")
    shutil.copy(store_path / "raw.json", folder / "pixels.json")
    out = cli("check").output
    assert "warning: space pixels: index file" in out and "another transform" in out
    ids, x = _raw(store_path)
    centred = normalize(x - x.mean(axis=0))
    _assert_hits(_hits(cli, "--id", int(ids[1]), "-k", 4), _expected_hits(ids, centred, ids[1], 4))
    assert _index_file(store_path)[1] != "raw"  # the reader saved the one it rebuilt
    assert "index and database agree" in cli("check").output


def test_images_ingested_after_a_transform_are_searchable_under_it(image_dir, cli, store_path):
    _ingest(cli, image_dir)
    _, before = _raw(store_path)
    mean = before.astype(np.float64).mean(axis=0).astype(np.float32)  # the fitted mean
    _transform(cli, "--center")
    make_image(image_dir / "unlabeled" / "late.png", seed=777)
    _ingest(cli, image_dir)
    ids, x = _raw(store_path)
    assert len(ids) == len(before) + 1
    late = int(ids[-1])
    centred = normalize(x - mean)  # new vectors go through the transform as it was fitted
    _assert_hits(_hits(cli, "--id", late, "-k", 4), _expected_hits(ids, centred, late, 4))
    other = int(ids[0])
    hits = _hits(cli, "--id", other, "-k", len(ids) - 1)
    assert late in [h["id"] for h in hits]
    _assert_hits(hits, _expected_hits(ids, centred, other, len(ids) - 1))


def test_an_outside_file_is_transformed_like_the_stored_vectors(image_dir, tmp_path, cli):
    _ingest(cli, image_dir)
    _transform(cli, "--pca", 6)
    twin = tmp_path / "elsewhere" / "u2.bmp"  # u2's pixels in other bytes: embedded now
    twin.parent.mkdir()
    Image.open(image_dir / "unlabeled" / "u2.png").save(twin)
    hits = _hits(cli, twin, "-k", 2)
    assert hits[0]["path"].endswith("u2.png") and hits[0]["similarity"] == pytest.approx(1, 1e-4)


def test_info_shows_each_space_transform(image_dir, cli):
    _ingest(cli, image_dir)
    assert "raw cosine" in cli("info").output
    _transform(cli, "--pca", 4)
    out = cli("info")
    assert out.exit_code == 0 and "PCA-whitened to 4 dims" in out.output
    space = json.loads(cli("info", "--json").stdout)["spaces"][0]
    assert (space["transform_kind"], space["transform"]) == ("pca", "PCA-whitened to 4 dims")
    _transform(cli, "--center")
    assert "mean-centred" in cli("info").output


def _clean(result, code: int) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    return result.output


def test_bad_requests_get_a_clear_message_and_change_nothing(image_dir, cli, db):
    _ingest(cli, image_dir)
    n = len(db("SELECT image_id FROM vectors"))
    out = _clean(cli("transform", "--space", "pixels", "--pca", n + 1), 2)
    assert "--pca" in out and f"between 1 and {n}" in out
    assert "--pca" in _clean(cli("transform", "--space", "pixels", "--pca", 0), 2)
    out = _clean(cli("transform", "--space", "pixels", "--raw", "--center"), 2)
    assert "exactly one of --raw, --center, --pca N" in out
    _clean(cli("transform", "--space", "pixels"), 2)
    assert "--space" in _clean(cli("transform", "--center"), 2)
    out = _clean(cli("transform", "--space", "hog", "--center"), 1)
    assert "space 'hog' is not in this store" in out
    assert db("SELECT count(*) FROM runs WHERE kind = 'transform'") == [(0,)]
    assert db("SELECT count(*) FROM space_transforms") == [(0,)]


def test_a_space_without_vectors_and_a_store_without_one(tmp_path, cli):
    (tmp_path / "empty").mkdir()
    _ingest(cli, tmp_path / "empty")
    out = _clean(cli("transform", "--space", "pixels", "--center"), 1)
    assert "space 'pixels' has no vectors yet" in out
    _transform(cli, "--raw")  # nothing to fit: allowed
    out = _clean(cli("transform", "--space", "pixels", "--center", store=tmp_path / "none"), 1)
    assert "no vecstore store at" in out


def test_a_read_only_store_refuses_clearly(image_dir, cli, monkeypatch):
    _ingest(cli, image_dir)

    def refuse(self, **_):
        raise StoreReadOnly(str(self.store_path), "Permission denied")

    monkeypatch.setattr(WriteLock, "acquire", refuse)
    out = _clean(cli("transform", "--space", "pixels", "--center"), 1)
    assert "is read-only" in out
