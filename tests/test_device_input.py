"""The CNN input made once per file and finished where the network runs: the host path gives
the reference preprocessing (torchvision's Resize, CenterCrop, ToTensor, Normalize on a PIL
image) exactly; the device path (uint8 pixels or JPEG bytes, resized, cropped and normalised
on the device) gives the reference vectors within cosine 0.9999, run here with device cpu;
an ingest decodes each new file once and embeds from that decode. Random weights (recorded as
such): only the agreement of two paths is tested, never what the vectors mean."""

from __future__ import annotations

import io
import sqlite3

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from vecstore.embedders import get_embedder, to_rgb
from vecstore.embedders.prepare import Prepared, device_jpeg, prepare_file, prepare_image
from vecstore.embedders.resnet import make_transform
from vecstore.embedders.tensors import input_batch

from .conftest import make_image
from .test_dicom import write_dicom

SIZES = [(512, 512), (300, 700), (257, 1000), (256, 256), (224, 224), (1000, 333), (225, 226)]


def picture(w: int, h: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A smooth random picture (a scan's structure, not noise)."""
    rng = np.random.default_rng(seed)
    small = (rng.random((max(h // 16, 2), max(w // 16, 2), 3)) * 255).astype(np.uint8)
    img = Image.fromarray(small).resize((w, h), Image.BICUBIC).filter(ImageFilter.GaussianBlur(2))
    return img.convert(mode)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("w,h", SIZES)
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_the_host_crop_is_the_reference_preprocessing_exactly(w, h, mode):
    img = picture(w, h, seed=w + h, mode=mode)
    x, kept, failed = input_batch([prepare_image(img, "host")], "cpu")
    assert kept == [0] and failed == []
    assert torch.equal(x[0], make_transform()(to_rgb(img)))


def test_the_device_resize_agrees_with_the_reference_input():
    imgs = [picture(w, h, seed=i) for i, (w, h) in enumerate(SIZES)]
    x, kept, _ = input_batch([prepare_image(i, "device") for i in imgs], "cpu")
    ref = torch.stack([make_transform()(i) for i in imgs])
    assert kept == list(range(len(imgs)))
    assert (x - ref).abs().max() < 0.05  # a level or two of 255, over the std
    assert not torch.equal(x, ref)  # the other resize really ran


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One folder of every kind the device path treats differently."""
    root = tmp_path_factory.mktemp("kinds")
    picture(400, 300, 1).save(root / "rgb.jpg", quality=92)
    picture(300, 500, 2, "L").save(root / "gray.jpg", quality=92)
    picture(320, 320, 3).save(root / "progressive.jpg", quality=90, progressive=True)
    picture(300, 300, 4, "CMYK").save(root / "cmyk.jpg")
    turned = picture(300, 400, 5)
    exif = Image.Exif()
    exif[0x0112] = 6
    turned.save(root / "turned.jpg", exif=exif)
    picture(350, 260, 6).save(root / "rgb.png")
    picture(260, 260, 7, "RGBA").save(root / "alpha.png")
    wide = (np.asarray(picture(300, 280, 8, "L"), np.uint16) * 257).astype(np.uint16)
    Image.fromarray(wide).save(root / "deep.png")
    write_dicom(root / "scan.dcm", (np.asarray(picture(256, 300, 9, "L")) * 16).astype(np.uint16))
    return root


def test_plain_jpegs_go_to_the_device_as_bytes_and_the_others_as_pixels(files):
    kinds = {p.name: prepare_file(p, "device").kind for p in sorted(files.iterdir())}
    assert kinds == {
        "alpha.png": "pixels",
        "cmyk.jpg": "pixels",  # decoders differ on CMYK: PIL's
        "deep.png": "pixels",
        "gray.jpg": "jpeg",
        "progressive.jpg": "jpeg",
        "rgb.jpg": "jpeg",
        "rgb.png": "pixels",
        "scan.dcm": "pixels",
        "turned.jpg": "pixels",  # EXIF orientation: PIL turns it upright
    }
    assert all(prepare_file(p, "host").kind == "crop" for p in files.iterdir())


def test_the_device_path_gives_the_reference_vectors(files):
    items = [(i, str(p)) for i, p in enumerate(sorted(files.iterdir()))]
    ref = get_embedder("resnet18", weights="random", device="cpu", preprocess="host")
    dev = get_embedder("resnet18", weights="random", device="cpu", preprocess="device")
    assert (ref.where, dev.where) == ("host", "device")
    got = {}
    for emb in (ref, dev):
        batches = list(emb.embed_files(items))
        assert all(not failed for _, _, failed in batches)
        got[emb.where] = np.concatenate([v for _, v, _ in batches])
    assert got["host"].shape == (len(items), 512)
    cos = cosines(got["host"], got["device"])
    assert cos.min() >= 0.9999, dict(zip([p for _, p in items], cos.round(6), strict=True))
    assert not np.array_equal(got["host"], got["device"])


def test_a_jpeg_the_decoder_refuses_falls_back_to_pil_and_garbage_fails_alone(files):
    png = (files / "rgb.png").read_bytes()
    jpg = (files / "rgb.jpg").read_bytes()
    items = [
        Prepared("jpeg", np.frombuffer(jpg, np.uint8)),
        Prepared("jpeg", np.frombuffer(png, np.uint8)),  # not a JPEG: PIL reads it
        Prepared("jpeg", np.frombuffer(b"\xff\xd8\xff" + b"junk" * 50, np.uint8)),
    ]
    x, kept, failed = input_batch(items, "cpu")
    assert kept == [0, 1] and [i for i, _ in failed] == [2]
    assert "not an image" in failed[0][1] or "cannot decode" in failed[0][1]
    expected = make_transform()(Image.open(io.BytesIO(png)).convert("RGB"))
    assert (x[1] - expected).abs().max() < 0.05


def test_only_a_plain_jpeg_within_the_pixel_limit_is_left_to_the_device(files):
    from vecstore.params import FileLimits

    data = (files / "rgb.jpg").read_bytes()
    assert device_jpeg(data)
    assert not device_jpeg(data, FileLimits(max_pixels=400 * 300 - 1))
    assert not device_jpeg((files / "cmyk.jpg").read_bytes())
    assert not device_jpeg((files / "rgb.png").read_bytes())


def vectors(store, space="resnet18") -> dict[str, np.ndarray]:
    con = sqlite3.connect(store / "vecstore.db")
    rows = con.execute(
        "SELECT i.path, v.vector FROM vectors v JOIN spaces s ON s.id = v.space_id "
        "JOIN images i ON i.id = v.image_id WHERE s.name = ?",
        (space,),
    ).fetchall()
    con.close()
    return {p: np.frombuffer(v, np.float32) for p, v in rows}


@pytest.fixture
def scans(tmp_path):
    root = tmp_path / "scans"
    for i in range(7):
        make_image(root / f"s{i}.png", seed=i, size=40 + 8 * i)
    picture(300, 240, 1).save(root / "photo.jpg")
    make_image(root / "copy" / "s0.png", seed=0, size=40)  # same bytes: one image
    (root / "bad.png").write_bytes(b"not an image")
    return root


def test_an_ingest_decodes_each_new_file_once_and_embeds_from_that_decode(
    scans, cli, store_path, tmp_path, monkeypatch
):
    import vecstore.embedders.resnet as resnet
    import vecstore.ingest.decode as decode

    decodes: list[int] = []
    real = decode.decode_image
    monkeypatch.setattr(decode, "decode_image", lambda *a, **k: decodes.append(1) or real(*a, **k))
    monkeypatch.setattr(resnet, "prepare_file", lambda *a, **k: pytest.fail("read twice"))
    r = cli("ingest", scans, "--space", "resnet18", "--space", "hog", "--weights", "random")
    assert r.exit_code == 0, r.output
    assert len(decodes) == 10  # every file once, the bad one included
    fused = vectors(store_path)
    assert len(fused) == 8 and len(vectors(store_path, "hog")) == 8
    monkeypatch.undo()
    # the reference: the same images embedded afterwards, from their files
    other = tmp_path / "other"
    assert cli("ingest", scans, "--space", "hog", store=other).exit_code == 0
    r = cli("embed", "--space", "resnet18", "--weights", "random", store=other)
    assert r.exit_code == 0, r.output
    again = vectors(other)
    assert again.keys() == fused.keys()
    assert all(np.array_equal(fused[p], again[p]) for p in fused)


def test_an_ingest_over_several_chunks_embeds_every_image_once(
    scans, cli, store_path, db, monkeypatch
):
    import vecstore.ingest.register as register

    monkeypatch.setattr(register, "COMMIT_EVERY", 3)
    r = cli("ingest", scans, "--space", "resnet18", "--weights", "random", "--json")
    assert r.exit_code == 0, r.output
    assert db("SELECT COUNT(*), COUNT(DISTINCT image_id) FROM vectors") == [(8, 8)]
    assert db("SELECT COUNT(*) FROM images WHERE status = 'failed'") == [(1,)]
    assert db("SELECT COUNT(*) FROM embed_failures") == [(0,)]
    assert '"embedded": 8' in r.output


def test_preprocess_device_is_recorded_and_agrees_with_the_host(scans, cli, store_path, tmp_path):
    host = tmp_path / "host"
    for store, where in ((store_path, "device"), (host, "host")):
        r = cli(
            "ingest", scans, "--space", "resnet18", "--weights", "random",
            "--preprocess", where, store=store,
        )  # fmt: skip
        assert r.exit_code == 0, r.output
    con = sqlite3.connect(store_path / "vecstore.db")
    (params,) = con.execute("SELECT params FROM runs WHERE kind = 'ingest'").fetchone()
    con.close()
    assert '"preprocess": "device"' in params
    a, b = vectors(store_path), vectors(host)
    assert a.keys() == b.keys() and len(a) == 8
    keys = sorted(a)
    assert cosines(np.stack([a[k] for k in keys]), np.stack([b[k] for k in keys])).min() >= 0.9999


def test_a_bad_preprocess_value_is_a_usage_error(cli, scans):
    r = cli("ingest", scans, "--preprocess", "gpu")
    assert r.exit_code == 2 and "gpu" in r.output and "Traceback" not in r.output


def test_a_large_ingest_embeds_with_the_optimised_cpu_network(scans, cli, monkeypatch):
    """The scan embeds a batch per chunk; the job is the whole ingest, so the traced network
    (~1.2x on the CPU) is built once for it, as `embed` does for a large job."""
    import vecstore.embedders.resnet as resnet

    built: list[int] = []
    real = resnet.optimize_for_cpu
    monkeypatch.setattr(
        resnet, "optimize_for_cpu", lambda *a: built.append(1) or real(*a)
    )  # fmt: skip
    r = cli("ingest", scans, "--space", "resnet18", "--weights", "random", "--batch-size", "2")
    assert r.exit_code == 0, r.output
    assert built == [1]
