"""Embedders: dimensions, image modes, weights (random, local file, unavailable offline)."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from PIL import Image

from vecstore.embedders import get_embedder, to_gray, to_rgb
from vecstore.errors import UnknownSpace, WeightsUnavailable

from .conftest import make_image


@pytest.fixture
def gray_img(tmp_path):
    return Image.open(make_image(tmp_path / "g.png", seed=3, size=48))


def test_classic_dimensions_and_values(gray_img):
    hog = get_embedder("hog").embed_image(gray_img)
    hist = get_embedder("histogram").embed_image(gray_img)
    pix = get_embedder("pixels").embed_image(gray_img)
    assert hog.shape == (324,) and hog.dtype == np.float32 and hog.max() > 0
    assert hist.shape == (256,) and abs(float(hist.sum()) - 1.0) < 1e-5
    assert pix.shape == (256,) and 0.0 <= pix.min() and pix.max() <= 1.0


def test_image_modes_are_normalised(tmp_path):
    base = np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) % 256
    gray = Image.fromarray(base.astype(np.uint8), "L")
    sixteen = Image.fromarray((base * 257).astype(np.uint16))  # same picture, 16-bit
    assert sixteen.mode.startswith("I;16")
    rgba = gray.convert("RGBA")
    palette = gray.convert("P")
    for img in (gray, sixteen, rgba, palette, gray.convert("RGB")):
        assert to_rgb(img).mode == "RGB"
        assert to_gray(img).mode == "L"
    assert np.array_equal(np.asarray(to_gray(sixteen)), np.asarray(gray))
    # fully transparent pixels become black, not whatever colour they held
    rgba_arr = np.asarray(rgba).copy()
    rgba_arr[..., 3] = 0
    assert np.asarray(to_rgb(Image.fromarray(rgba_arr, "RGBA"))).max() == 0
    # a 16-bit PNG on disk goes through the same path
    sixteen.save(tmp_path / "s16.png")
    assert np.array_equal(np.asarray(to_gray(Image.open(tmp_path / "s16.png"))), np.asarray(gray))


def test_unknown_space_lists_the_known_ones():
    with pytest.raises(UnknownSpace, match="resnet18.*hog"):
        get_embedder("vgg16")


@pytest.mark.parametrize(
    "name,dim",
    [("resnet18", 512), ("resnet18-layer3", 256), ("resnet50", 2048), ("resnet50-layer3", 1024)],
)
def test_resnet_dimensions_with_random_weights(name, dim, gray_img):
    emb = get_embedder(name, weights="random", device="cpu")
    assert emb.info.dim == dim and emb.info.weights_random
    assert emb.info.weights.startswith("random")
    vec = emb.embed_image(gray_img)
    assert vec.shape == (dim,) and np.isfinite(vec).all()


def test_resnet_accepts_every_image_mode(tmp_path):
    emb = get_embedder("resnet18-layer3", weights="random", device="cpu")
    arr = (np.arange(300 * 200) % 251).reshape(300, 200)
    imgs = {
        "L": Image.fromarray(arr.astype(np.uint8), "L"),
        "I;16": Image.fromarray((arr * 257).astype(np.uint16)),
        "RGBA": Image.fromarray(arr.astype(np.uint8), "L").convert("RGBA"),
        "P": Image.fromarray(arr.astype(np.uint8), "L").convert("P"),
    }
    vecs = {m: emb.embed_image(img) for m, img in imgs.items()}
    # the 16-bit copy of the same picture gives the same vector as the 8-bit one
    np.testing.assert_allclose(vecs["I;16"], vecs["L"], rtol=1e-4, atol=1e-5)
    assert all(v.shape == (256,) for v in vecs.values())


def test_local_weights_file_gives_the_same_network(tmp_path, gray_img):
    import torch
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "w.pth")
    from_file = get_embedder("resnet18", weights=str(tmp_path / "w.pth"), device="cpu")
    random = get_embedder("resnet18", weights="random", device="cpu")
    assert not from_file.info.weights_random
    assert from_file.info.weights == f"file:{tmp_path / 'w.pth'}"
    assert from_file.info.weights_sha256 and len(from_file.info.weights_sha256) == 64
    np.testing.assert_allclose(
        from_file.embed_image(gray_img), random.embed_image(gray_img), rtol=1e-5
    )


def test_weights_file_for_another_network_is_refused(tmp_path):
    import torch
    import torchvision

    torch.save(torchvision.models.resnet50(weights=None).state_dict(), tmp_path / "r50.pth")
    with pytest.raises(WeightsUnavailable, match="does not fit resnet18"):
        get_embedder("resnet18", weights=str(tmp_path / "r50.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsUnavailable, match="cannot read weights file"):
        get_embedder("resnet18", weights=str(tmp_path / "junk.pth"))
    with pytest.raises(WeightsUnavailable, match="not found"):
        get_embedder("resnet18", weights=str(tmp_path / "missing.pth"))


def test_pretrained_weights_offline_say_how_to_supply_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    lookups: list[str] = []

    def offline(host, *a, **k):  # below every urlopen (torch.hub holds its own name for it)
        lookups.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "no network")

    monkeypatch.setattr(socket, "getaddrinfo", offline)
    with pytest.raises(WeightsUnavailable) as err:
        get_embedder("resnet18")
    assert lookups == ["download.pytorch.org"]  # the download was tried, and went nowhere
    msg = str(err.value)
    assert "resnet18-f37072fd.pth" in msg and str(tmp_path / "torch-home") in msg
    assert "--weights PATH" in msg and "--weights random" in msg


def test_bad_batch_options_and_path_weights(tmp_path):
    import torch

    from vecstore.errors import BadInput

    with pytest.raises(BadInput, match="batch size"):
        get_embedder("hog", batch_size=0)
    with pytest.raises(BadInput, match="workers"):
        get_embedder("resnet18", weights="random", workers=-1)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    get_embedder("resnet18-layer3", weights="random")  # must not reseed the caller's generator
    assert torch.equal(torch.rand(3), expected)
    import torchvision

    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "t.pth")
    assert (
        get_embedder("resnet18", weights=tmp_path / "t.pth").info.weights
        == f"file:{tmp_path / 't.pth'}"
    )


def test_batched_files_give_the_same_vectors_as_one_image_at_a_time(tmp_path):
    """The batch path (DataLoader, traced and frozen network on the CPU) matches embed_image."""
    paths = [make_image(tmp_path / f"i{i}.png", seed=i, size=40 + i) for i in range(11)]
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    emb = get_embedder("resnet18", weights="random", device="cpu", batch_size=4, workers=1)
    items = [(i, str(p)) for i, p in enumerate(paths)] + [(99, str(tmp_path / "bad.png"))]
    got_ids, got_vecs, failed = [], [], []
    for ids, vecs, bad in emb.embed_files(items):
        got_ids += ids
        got_vecs.append(vecs)
        failed += bad
    assert emb._batch_model is not None and emb._batch_model is not emb.model  # optimised path ran
    assert got_ids == list(range(11))
    assert failed == [(99, "not an image (format not recognised)")]
    batch = np.concatenate(got_vecs)
    single = np.stack([emb.embed_image(Image.open(p)) for p in paths])
    cos = (batch * single).sum(1) / np.linalg.norm(batch, axis=1) / np.linalg.norm(single, axis=1)
    assert cos.min() > 0.99999
    np.testing.assert_allclose(batch, single, rtol=1e-3, atol=1e-4)
