"""DICOM files as images (vecstore.dicom): pydicom's bundled sample files (they ship inside the
pydicom wheel: no download) and files written here with pydicom, decoded to the values a
viewer shows and ingested beside PNG and JPEG files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

from vecstore.dicom import decode_dicom
from vecstore.errors import EmbedError

from .conftest import make_image

BIG = 10**9  # a pixel limit nothing here reaches


def sample(name: str) -> Path:
    """A DICOM file bundled in the pydicom wheel."""
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} is not bundled with this pydicom"
    return Path(path)


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits: int | None = None,
    **tags,
) -> Path:
    """A Secondary Capture DICOM file of ``pixels`` (frames first for several), written with
    pydicom, with the preamble; ``tags`` set on the dataset as they are."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.set_pixel_data(pixels, photometric, bits or pixels.dtype.itemsize * 8)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def decoded(path: Path) -> np.ndarray:
    return np.asarray(decode_dicom(path.read_bytes(), BIG).image)


# ---- the values a viewer shows ----------------------------------------------------------------
def test_a_12_bit_image_is_shown_through_its_window(tmp_path):
    """Window Center 1000 / Width 1000 over 12-bit values: 500 and below black, 1500 and above
    white, the centre mid-gray (DICOM's LINEAR function, through pydicom's helper)."""
    path = write_dicom(
        tmp_path / "w.dcm",
        np.array([[0, 500, 1000, 1500, 4095]], np.uint16),
        bits=12,
        WindowCenter=1000,
        WindowWidth=1000,
    )
    assert decoded(path).tolist() == [[0, 0, 128, 255, 255]]


def test_signed_16_bit_values_are_rescaled_to_hounsfield_units_before_the_window(tmp_path):
    """A CT slice stored signed with Rescale Intercept -1024: the brain window (40 / 400) is
    applied to the Hounsfield units, not to the stored values."""
    hu = np.array([[-1000, -160, 40, 240, 1000]], np.int16)
    path = write_dicom(
        tmp_path / "ct.dcm",
        hu + 1024,
        RescaleSlope=1,
        RescaleIntercept=-1024,
        WindowCenter=40,
        WindowWidth=400,
    )
    assert decoded(path).tolist() == [[0, 0, 128, 255, 255]]


def test_without_a_window_the_image_spans_its_own_range(tmp_path):
    path = write_dicom(tmp_path / "r.dcm", np.array([[100, 300, 500]], np.uint16))
    assert decoded(path).tolist() == [[0, 128, 255]]


def test_monochrome1_is_inverted(tmp_path):
    """MONOCHROME1's lowest value is white: the same values under MONOCHROME2 give the
    complement."""
    values = np.array([[0, 10, 200, 255]], np.uint8)
    one = decoded(write_dicom(tmp_path / "m1.dcm", values, "MONOCHROME1"))
    two = decoded(write_dicom(tmp_path / "m2.dcm", values, "MONOCHROME2"))
    assert (one.astype(int) + two == 255).all() and two.tolist() == [[0, 10, 200, 255]]


def test_a_multi_frame_file_shows_its_middle_frame(tmp_path):
    frames = np.zeros((5, 2, 6), np.uint8)
    for i in range(5):
        frames[i, 0, i] = 200  # frame i: one bright pixel in column i
    dcm = decode_dicom(write_dicom(tmp_path / "mf.dcm", frames).read_bytes(), BIG)
    assert (dcm.frames, dcm.frame) == (5, 2)
    assert np.argwhere(np.asarray(dcm.image) == 255).tolist() == [[0, 2]]


def test_colour_samples_stay_rgb():
    dcm = decode_dicom(sample("examples_rgb_color.dcm").read_bytes(), BIG)
    ds = pydicom.dcmread(sample("examples_rgb_color.dcm"))
    assert dcm.image.mode == "RGB"
    assert np.array_equal(np.asarray(dcm.image), ds.pixel_array)


# ---- what the file says, and what identifies the image --------------------------------------
def test_the_chosen_tags_are_read_as_json_values():
    dcm = decode_dicom(sample("CT_small.dcm").read_bytes(), BIG)
    ds = pydicom.dcmread(sample("CT_small.dcm"))
    assert dcm.tags["PatientID"] == ds.PatientID and dcm.tags["Modality"] == "CT"
    assert dcm.tags["SOPInstanceUID"] == ds.SOPInstanceUID
    assert dcm.tags["PixelSpacing"] == "\\".join(str(v) for v in ds.PixelSpacing)
    assert dcm.tags["SliceLocation"] == pytest.approx(float(ds.SliceLocation))
    json.dumps(dcm.tags)  # storable as the image's metadata


def test_identical_pixel_data_under_two_sop_instance_uids_is_one_identity(tmp_path):
    values = np.arange(64, dtype=np.uint16).reshape(8, 8)
    a = write_dicom(tmp_path / "a.dcm", values, PatientID="P1")
    b = write_dicom(tmp_path / "b.dcm", values, PatientID="P1-anonymised")
    c = write_dicom(tmp_path / "c.dcm", values + 1)
    ids = [decode_dicom(p.read_bytes(), BIG).content_sha256 for p in (a, b, c)]
    assert a.read_bytes() != b.read_bytes() and ids[0] == ids[1] != ids[2]


# ---- files that hold no usable image: each says why -----------------------------------------
def test_a_file_without_pixel_data_says_so():
    with pytest.raises(EmbedError, match="without pixel data.*RTPLAN"):
        decode_dicom(sample("rtplan.dcm").read_bytes(), BIG)


def test_a_truncated_file_says_so(tmp_path):
    data = write_dicom(tmp_path / "t.dcm", np.ones((64, 64), np.uint16)).read_bytes()
    with pytest.raises(EmbedError, match="truncated or corrupt"):
        decode_dicom(data[: len(data) - 100], BIG)


def test_a_missing_decoder_is_named():
    """JPEG-LS needs a plugin pydicom documents (pyjpegls, pylibjpeg-libjpeg or gdcm), none
    of them a vecstore dependency: the message names the transfer syntax and the plugins."""
    data = sample("MR_small_jpeg_ls_lossless.dcm").read_bytes()
    with pytest.raises(EmbedError) as err:
        decode_dicom(data, BIG)
    assert "JPEG-LS Lossless" in str(err.value) and "not installed" in str(err.value)
    assert "pyjpegls" in str(err.value)


def test_an_image_over_the_pixel_limit_is_not_decoded(tmp_path):
    data = write_dicom(tmp_path / "big.dcm", np.zeros((40, 50), np.uint8)).read_bytes()
    with pytest.raises(EmbedError, match="50x40 = 2000 pixels, over the limit of 1999"):
        decode_dicom(data, 1999)


# ---- an ingest of a folder as a hospital exports it -----------------------------------------
@pytest.fixture
def mixed(tmp_path) -> Path:
    """Bundled DICOM samples (uncompressed, RLE, JPEG 2000, colour, multi-frame), generated
    ones, an extension-less file with the preamble (as PACS exports name them), PNG and JPEG;
    and files that are no image."""
    root = tmp_path / "scans"
    root.mkdir()
    for name in (
        "CT_small.dcm",
        "MR_small_RLE.dcm",
        "examples_jpeg2k.dcm",
        "SC_rgb_rle_2frame.dcm",
    ):
        shutil.copy(sample(name), root / name)
    shutil.copy(sample("MR_small.dcm"), root / "IM000001")
    write_dicom(
        root / "gen" / "mono1.dcm",
        np.arange(64, dtype=np.uint8).reshape(8, 8),
        "MONOCHROME1",
        Modality="OT",
    )
    shutil.copy(sample("rtplan.dcm"), root / "plan.dcm")
    (root / "README").write_text("not an image, no extension, no preamble")
    make_image(root / "a.png", seed=1)
    Image.open(make_image(root / "b.png", seed=2)).convert("RGB").save(root / "b.jpg")
    (root / "b.png").unlink()
    return root


def test_a_folder_mixing_dicom_png_and_jpeg_ingests_in_one_run(mixed, cli, db):
    result = cli("ingest", mixed, "--space", "histogram")
    assert result.exit_code == 0, result.output
    rows = dict(db("SELECT path, status FROM images"))
    ok = {Path(p).name for p, st in rows.items() if st == "ok"}
    assert ok == {
        "CT_small.dcm",
        "MR_small_RLE.dcm",
        "examples_jpeg2k.dcm",
        "SC_rgb_rle_2frame.dcm",
        "IM000001",
        "mono1.dcm",
        "a.png",
        "b.jpg",
    }
    assert "plan.dcm: DICOM file without pixel data" in result.output
    assert not any(Path(p).name == "README" for p in rows)  # not an image: not even scanned
    assert db("SELECT COUNT(*) FROM vectors") == [(8,)]
    meta = {
        Path(p).name: json.loads(m)
        for p, m in db("SELECT path, metadata_json FROM images WHERE metadata_json IS NOT NULL")
    }
    assert meta["CT_small.dcm"]["Modality"] == "CT" and meta["IM000001"]["Modality"] == "MR"
    assert "a.png" not in meta


def test_the_same_pixels_under_another_sop_instance_uid_ingest_as_one_image(tmp_path, cli, db):
    values = np.arange(256, dtype=np.uint16).reshape(16, 16)
    write_dicom(tmp_path / "s" / "a.dcm", values, PatientID="P1")
    write_dicom(tmp_path / "s" / "b.dcm", values, PatientID="P1")
    result = cli("ingest", tmp_path / "s", "--space", "histogram")
    assert result.exit_code == 0, result.output
    assert db("SELECT COUNT(*) FROM images") == [(1,)]
    assert db("SELECT COUNT(*) FROM image_paths") == [(2,)]
    assert "duplicate" in result.output


def test_a_dicom_file_queries_as_the_stored_image_it_is(mixed, cli):
    assert cli("ingest", mixed, "--space", "histogram").exit_code == 0
    result = cli("query", mixed / "CT_small.dcm", "-k", "3")
    assert result.exit_code == 0, result.output
    assert "CT_small.dcm" not in result.output.split("\n", 1)[1]  # itself left out of its hits


def test_info_lists_the_metadata_columns_with_counts(mixed, cli):
    assert cli("ingest", mixed, "--space", "histogram").exit_code == 0
    data = json.loads(cli("info", "--json").output)
    columns = {c["name"]: c for c in data["metadata"]}
    images = [p for p in mixed.rglob("*") if p.suffix == ".dcm" and p.name != "plan.dcm"]
    modalities = {pydicom.dcmread(p).Modality for p in [*images, mixed / "IM000001"]}
    assert columns["Modality"]["images"] == 6  # the six DICOM images
    assert columns["Modality"]["values"] == len(modalities)
    assert columns["PatientID"]["identifying"] and not columns["Modality"]["identifying"]
    text = cli("info").output
    assert "metadata columns:" in text and "PatientID" in text


# ---- metadata out: identifying columns only when named --------------------------------------
@pytest.fixture
def labeled_with_metadata(image_dir, tmp_path, cli):
    """The image_dir store with a metadata CSV (PatientID identifying, site not) and a
    propagation run."""
    meta = tmp_path / "meta.csv"
    rows = [
        f"{p.relative_to(image_dir)},P{i},{'Lyon' if i % 2 else 'Nice'}"
        for i, p in enumerate(sorted(image_dir.rglob("*.png")))
    ]
    meta.write_text("path,PatientID,site\n" + "\n".join(rows) + "\n")
    ingest = cli(
        "ingest", image_dir, "--labels-from-folders", "--space", "pixels", "--metadata", meta
    )
    assert ingest.exit_code == 0, ingest.output
    assert cli("propagate", "-k", "3").exit_code == 0
    return image_dir


def _export(cli, tmp_path, *args):
    out = tmp_path / "out.csv"
    result = cli("export", "-o", out, *args)
    return result, (pd.read_csv(out) if result.exit_code == 0 else None)


def test_an_export_leaves_metadata_out_unless_asked(labeled_with_metadata, cli, tmp_path):
    _, df = _export(cli, tmp_path)
    assert "PatientID" not in df.columns and "site" not in df.columns


def test_with_metadata_all_adds_the_columns_that_identify_no_one(
    labeled_with_metadata, cli, tmp_path
):
    _, df = _export(cli, tmp_path, "--with-metadata", "all")
    assert "site" in df.columns and "PatientID" not in df.columns
    assert set(df["site"]) == {"Lyon", "Nice"}


def test_an_identifying_column_comes_out_when_named(labeled_with_metadata, cli, tmp_path, db):
    _, df = _export(cli, tmp_path, "--with-metadata", "PatientID,site")
    stored = {
        iid: json.loads(m)["PatientID"] for iid, m in db("SELECT id, metadata_json FROM images")
    }
    assert dict(zip(df["image_id"], df["PatientID"])) == stored


def test_an_unknown_metadata_column_is_refused_by_name(labeled_with_metadata, cli, tmp_path):
    result, _ = _export(cli, tmp_path, "--with-metadata", "site,Age")
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "'Age'" in result.output and "PatientID" in result.output
    assert not (tmp_path / "out.csv").exists()


# ---- metadata in use: similar images among those a column selects --------------------------
def test_query_where_searches_only_the_images_a_metadata_value_selects(
    labeled_with_metadata, cli, db
):
    """--where site=Lyon: the neighbours all have that value, and they are the exact nearest
    of that group (what a search of every image, filtered afterwards, gives in full)."""
    lyon = {
        p
        for p, m in db("SELECT path, metadata_json FROM images")
        if json.loads(m)["site"] == "Lyon"
    }
    out = cli("query", "--id", "1", "-k", "20", "--where", "site=Lyon", "--json")
    assert out.exit_code == 0, out.output
    hits = [json.loads(line) for line in out.output.splitlines()]
    assert {h["path"] for h in hits} == lyon - {db("SELECT path FROM images WHERE id = 1")[0][0]}
    every = [
        json.loads(x) for x in cli("query", "--id", "1", "-k", "20", "--json").output.splitlines()
    ]
    assert [h["path"] for h in hits] == [h["path"] for h in every if h["path"] in lyon]
    two = cli("query", "--id", "1", "--where", "site=Lyon", "--where", "PatientID=P3", "--json")
    assert [json.loads(x)["path"] for x in two.output.splitlines()] == [
        p
        for p in lyon
        if json.loads(db("SELECT metadata_json FROM images WHERE path = ?", p)[0][0])["PatientID"]
        == "P3"
    ]


def test_query_where_names_what_is_wrong(labeled_with_metadata, cli):
    unknown = cli("query", "--id", "1", "--where", "Age=54")
    assert unknown.exit_code != 0 and "'Age'" in unknown.output and "site" in unknown.output
    malformed = cli("query", "--id", "1", "--where", "site")
    assert malformed.exit_code != 0 and "COLUMN=VALUE" in malformed.output
    none = cli("query", "--id", "1", "--where", "site=Paris")
    assert none.exit_code == 0 and "no image has site=Paris" in none.output
    assert "Traceback" not in unknown.output + malformed.output + none.output


# ---- every frame an image: ingest --frames all -------------------------------------------------
def five_frames(path: Path, patient: str = "P1") -> Path:
    """A 5-frame file: frame i has one bright pixel in column i (distinct pixels, 8x8)."""
    frames = np.zeros((5, 8, 8), np.uint8)
    for i in range(5):
        frames[i, 0, i] = 200
    return write_dicom(path, frames, PatientID=patient)


@pytest.fixture
def framed(tmp_path, cli, db):
    """A folder with a 5-frame file and a PNG, ingested with --frames all."""
    root = tmp_path / "scans"
    five_frames(root / "P1" / "mf.dcm")
    make_image(root / "P1" / "a.png", seed=1)
    r = cli("ingest", root, "--space", "histogram", "--frames", "all")
    assert r.exit_code == 0, r.output
    return root


def paths(db) -> list[str]:
    return sorted(p for (p,) in db("SELECT path FROM image_paths"))


def test_frames_all_makes_each_frame_an_image_under_its_frame_path(framed, db):
    mf = str(framed / "P1" / "mf.dcm")
    assert paths(db) == sorted(
        [str(framed / "P1" / "a.png")] + [f"{mf}#frame={n}" for n in range(1, 6)]
    )
    assert db("SELECT COUNT(DISTINCT sha256) FROM images") == [(6,)]
    meta = db("SELECT metadata_json FROM images WHERE path LIKE '%#frame=%'")
    assert {json.loads(m)["PatientID"] for (m,) in meta} == {"P1"}  # each frame has the tags


def test_a_frame_path_decodes_to_that_frame(framed, db):
    from vecstore.imagefile import open_image_file, sha256_image_file

    mf = framed / "P1" / "mf.dcm"
    for n in range(1, 6):
        img = np.asarray(open_image_file(f"{mf}#frame={n}"))
        assert np.argwhere(img == 255).tolist() == [[0, n - 1]]
        (sha,) = db("SELECT i.sha256 FROM images i JOIN image_paths p ON p.image_id = i.id "
                    "WHERE p.path = ?", f"{mf}#frame={n}")[0]  # fmt: skip
        assert sha256_image_file(f"{mf}#frame={n}") == sha
    with pytest.raises(EmbedError, match="no frame 6"):
        open_image_file(f"{mf}#frame=6")


def test_a_second_ingest_reads_nothing_again_and_misses_nothing(framed, cli, db):
    before = db("SELECT id, path FROM image_paths ORDER BY id")
    r = cli("ingest", framed, "--space", "histogram", "--frames", "all", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert (rep["unchanged"], rep["added"], rep["missing"]) == (2, 0, [])
    assert db("SELECT id, path FROM image_paths ORDER BY id") == before


def test_a_frame_is_labeled_queried_and_checked_by_its_path(framed, cli, db):
    frame = f"{framed / 'P1' / 'mf.dcm'}#frame=2"
    r = cli("labels", "set", frame, "normal", "--new-class")
    assert r.exit_code == 0, r.output
    assert db("SELECT l.label FROM labels l JOIN image_paths p ON p.image_id = l.image_id "
              "WHERE p.path = ?", frame) == [("normal",)]  # fmt: skip
    r = cli("query", frame, "-k", "2")
    assert r.exit_code == 0, r.output
    assert frame not in r.output.split("\n", 1)[1]  # the stored frame itself is left out
    r = cli("check")
    assert r.exit_code == 0 and "missing" not in r.output.lower(), r.output


def test_forget_missing_keeps_the_frames_of_a_file_on_disk_and_drops_those_of_a_gone_one(
    framed, cli, db
):
    assert cli("forget", "--missing", framed).exit_code == 0
    assert len(paths(db)) == 6
    (framed / "P1" / "mf.dcm").unlink()
    r = cli("forget", "--missing", framed)
    assert r.exit_code == 0, r.output
    assert paths(db) == [str(framed / "P1" / "a.png")]


def test_the_frames_of_a_file_take_its_metadata_row(tmp_path, cli, db):
    root = tmp_path / "scans"
    five_frames(root / "mf.dcm")
    (tmp_path / "meta.csv").write_text("path,site\nmf.dcm,Lyon\n")
    args = ("--space", "histogram", "--frames", "all", "--metadata", tmp_path / "meta.csv")
    r = cli("ingest", root, *args)
    assert r.exit_code == 0, r.output
    sites = [json.loads(m).get("site") for (m,) in db("SELECT metadata_json FROM images")]
    assert sites == ["Lyon"] * 5


def test_a_folder_export_of_frames_is_refused_by_name(framed, cli, tmp_path):
    assert cli("labels", "set", framed / "P1" / "a.png", "normal", "--new-class").exit_code == 0
    frame = f"{framed / 'P1' / 'mf.dcm'}#frame=1"
    assert cli("labels", "set", frame, "cancer", "--new-class").exit_code == 0
    r = cli("propagate")
    assert r.exit_code == 0, r.output
    r = cli("export", "--format", "imagefolder", "-o", tmp_path / "out")
    assert r.exit_code == 1 and "is a frame of a multi-frame DICOM file" in r.output, r.output
    assert not (tmp_path / "out").exists()


def test_by_default_a_multi_frame_file_is_one_image_as_before(tmp_path, cli, db):
    five_frames(tmp_path / "s" / "mf.dcm")
    assert cli("ingest", tmp_path / "s", "--space", "histogram").exit_code == 0
    assert paths(db) == [str(tmp_path / "s" / "mf.dcm")]
