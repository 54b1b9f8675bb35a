"""The pseudo-label table out as dataset folders (vecstore.labeling.folders): torchvision's
ImageFolder reads the imagefolder export back, the FiftyOne export follows the documented
FiftyOneImageClassificationDataset schema, and an export is refused whole, before anything is
written, for an unsafe label, a folder with files, an unknown media or a missing image."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from vecstore.errors import BadInput
from vecstore.labeling.folders import FolderExport, write_fiftyone, write_imagefolder

CLASSES = ["dog", "cat"]  # the run's order, not sorted: FiftyOne's indices follow it


def _sha(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _png(path: Path, colour: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return path


@pytest.fixture
def table(tmp_path: Path) -> pd.DataFrame:
    """Five images: two named x.png in different folders, a dotted name, one unlabeled."""
    src = tmp_path / "src"
    rows = [
        (11, _png(src / "a" / "x.png", (255, 0, 0)), "cat", "expert", 1.0),
        (12, _png(src / "b" / "x.png", (0, 255, 0)), "dog", "propagated", 0.75),
        (13, _png(src / "c" / "y.png", (0, 0, 255)), "cat", "propagated", 0.625),
        (14, _png(src / "d" / "z.v2.png", (9, 9, 9)), "dog", "propagated", 0.5),
        (15, _png(src / "u.png", (90, 90, 90)), None, "none", 0.0),
    ]
    return pd.DataFrame(
        {
            "image_id": [r[0] for r in rows],
            "path": [str(r[1]) for r in rows],
            "sha256": [_sha(r[1]) for r in rows],
            "label": [r[2] for r in rows],
            "source": [r[3] for r in rows],
            "confidence": [r[4] for r in rows],
            "p_dog": [float(r[2] == "dog") for r in rows],
            "p_cat": [float(r[2] == "cat") for r in rows],
        }
    )


def _row(df: pd.DataFrame, file_name: str) -> pd.Series:
    """The table's row of an exported file, by its ``<image_id>_`` prefix."""
    return df.set_index("image_id").loc[int(file_name.split("_", 1)[0])]


def _everything(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_imagefolder_export_is_read_back_by_torchvision(table, tmp_path):
    from torchvision.datasets import ImageFolder

    out = tmp_path / "made" / "for" / "ds"  # missing parents are made
    res = write_imagefolder(table, out)
    assert isinstance(res, FolderExport)
    assert res.to_dict() == {
        "path": str(out),
        "images": 4,
        "skipped_unlabeled": 1,
        "classes": {"cat": 2, "dog": 2},
        "media": "copy",
    }
    ds = ImageFolder(str(out))
    assert ds.classes == ["cat", "dog"]
    assert len(ds.samples) == 4
    for path, idx in ds.samples:
        assert not os.path.islink(path)  # copied bytes
        row = _row(table, Path(path).name)
        assert Path(path).name == f"{row.name}_{Path(row['path']).name}"
        assert _sha(path) == row["sha256"]
        assert ds.classes[idx] == row["label"]
    names = sorted(Path(p).name for p, _ in ds.samples)
    assert names == ["11_x.png", "12_x.png", "13_y.png", "14_z.v2.png"]  # both x.png
    assert ds[0][0].size == (8, 8)  # the files are images torchvision decodes
    assert not list(tmp_path.rglob(".vecstore-*"))


def test_imagefolder_symlinks_point_to_the_originals(table, tmp_path):
    from torchvision.datasets import ImageFolder

    out = tmp_path / "links"
    res = write_imagefolder(table, out, media="symlink")
    assert (res.media, res.images, res.skipped_unlabeled) == ("symlink", 4, 1)
    entries = [p for p in out.rglob("*") if not p.is_dir()]
    assert len(entries) == 4
    for p in entries:
        assert p.is_symlink()
        target = os.readlink(p)
        assert os.path.isabs(target)
        assert target == _row(table, p.name)["path"]
        assert p.parent.name == _row(table, p.name)["label"]
    ds = ImageFolder(str(out))
    assert (ds.classes, len(ds)) == (["cat", "dog"], 4)
    assert ds[len(ds) - 1][0].size == (8, 8)


@pytest.mark.parametrize("media", ["copy", "symlink"])
def test_fiftyone_export_follows_the_documented_schema(table, tmp_path, media):
    # FiftyOne needs MongoDB, too heavy to install here: the export is checked against the
    # format of https://docs.voxel51.com/user_guide/dataset_creation/datasets.html
    # #fiftyoneimageclassificationdataset (docs/source/user_guide/dataset_creation/
    # datasets.rst in voxel51/fiftyone) and what its importer reads
    # (fiftyone/utils/data/importers.py, FiftyOneImageClassificationDatasetImporter.setup:
    # uuid = a file's path under data/ less its extension; labels.json's "labels" maps
    # uuid -> {"label": <target>, "confidence": ...}, target an index into "classes").
    out = tmp_path / "fo"
    res = write_fiftyone(table, out, CLASSES, media=media)
    assert (res.images, res.skipped_unlabeled, res.media) == (4, 1, media)
    assert res.classes == {"dog": 2, "cat": 2}
    assert sorted(os.listdir(out)) == ["data", "labels.json"]
    doc = json.loads((out / "labels.json").read_text())
    assert set(doc) == {"classes", "labels"}
    assert doc["classes"] == CLASSES
    uuids = {"11_x", "12_x", "13_y", "14_z.v2"}  # <image_id>_<file name> less its extension
    assert set(doc["labels"]) == uuids  # one entry per labeled image, none for the unlabeled
    for uuid, target in doc["labels"].items():
        row = _row(table, uuid)
        assert set(target) == {"label", "confidence"}
        assert doc["classes"][target["label"]] == row["label"]
        assert target["confidence"] == row["confidence"]
    data = {}  # uuid -> files, as the importer maps data/
    for p in (out / "data").rglob("*"):
        data.setdefault(os.path.splitext(p.relative_to(out / "data"))[0], []).append(p)
    assert set(data) == uuids
    for uuid, files in data.items():
        assert len(files) == 1
        assert _sha(files[0]) == _row(table, uuid)["sha256"]
        assert files[0].is_symlink() == (media == "symlink")


def test_fiftyone_manifest_lists_the_originals_without_copying(table, tmp_path):
    out = tmp_path / "fo"
    res = write_fiftyone(table, out, CLASSES, media="manifest")
    assert (res.media, res.images) == ("manifest", 4)
    assert sorted(os.listdir(out)) == ["data.json", "labels.json"]  # no data/
    manifest = json.loads((out / "data.json").read_text())
    labels = json.loads((out / "labels.json").read_text())["labels"]
    # the importer maps a manifest key to the uuid by dropping its extension
    assert sorted(os.path.splitext(k)[0] for k in manifest) == sorted(labels)
    assert "14_z.v2" in labels  # a dotted name keeps its uuid through the manifest
    for key, path in manifest.items():
        assert os.path.isabs(path)
        assert path == _row(table, key)["path"]


def test_a_label_outside_the_classes_is_added_after_them(table, tmp_path):
    df = table.copy()
    df.loc[df.image_id == 13, "label"] = "bird"
    res = write_fiftyone(df, tmp_path / "fo", CLASSES)
    doc = json.loads((tmp_path / "fo" / "labels.json").read_text())
    assert doc["classes"] == ["dog", "cat", "bird"]
    assert doc["labels"]["13_y"]["label"] == 2
    assert res.classes == {"dog": 2, "cat": 1, "bird": 1}


def test_unlabeled_rows_are_left_out_and_counted(table, tmp_path):
    df = table.copy()
    df["label"] = df["label"].astype(object)
    df.loc[df.image_id == 11, "label"] = ""
    df.loc[df.image_id == 12, "label"] = float("nan")
    res = write_imagefolder(df, tmp_path / "ds")
    assert (res.images, res.skipped_unlabeled) == (2, 3)
    assert _everything(tmp_path / "ds") == ["cat", "cat/13_y.png", "dog", "dog/14_z.v2.png"]


# ("" is no label at all: left out and counted, see above)
@pytest.mark.parametrize("bad", ["../evil", "..", ".", "a/b", "a\\b", "a\0b", "/abs"])
def test_a_label_that_is_no_folder_name_is_refused_before_anything_is_written(table, tmp_path, bad):
    df = table.copy()
    df.loc[df.image_id == 12, "label"] = bad
    before = _everything(tmp_path)
    out = tmp_path / "new" / "ds"
    with pytest.raises(BadInput, match="cannot be a folder name"):
        write_imagefolder(df, out)
    assert _everything(tmp_path) == before  # not out, not its parent, no evil
    res = write_fiftyone(df, out, CLASSES)  # as a FiftyOne label it is only a string
    assert bad in json.loads((out / "labels.json").read_text())["classes"]
    assert res.images == 4


def test_a_label_starting_with_a_dot_is_a_folder_name(table, tmp_path):
    df = table.copy()
    df.loc[df.image_id == 12, "label"] = ".hidden"
    write_imagefolder(df, tmp_path / "ds")
    assert (tmp_path / "ds" / ".hidden" / "12_x.png").is_file()


@pytest.mark.parametrize("write", [write_imagefolder, write_fiftyone])
def test_a_folder_with_files_is_never_written_into(table, tmp_path, write):
    out = tmp_path / "mine"
    (out / "sub").mkdir(parents=True)
    (out / "keep.txt").write_text("the user's")
    args = (CLASSES,) if write is write_fiftyone else ()
    with pytest.raises(BadInput, match="folder with files"):
        write(table, out, *args)
    assert _everything(out) == ["keep.txt", "sub"]
    assert (out / "keep.txt").read_text() == "the user's"
    assert not list(tmp_path.glob(".vecstore-*"))


def test_an_empty_folder_becomes_the_export_and_a_file_is_refused(table, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert write_imagefolder(table, empty).images == 4
    assert sorted(os.listdir(empty)) == ["cat", "dog"]
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(BadInput, match="not a folder"):
        write_imagefolder(table, a_file)
    assert a_file.read_text() == "x"


@pytest.mark.parametrize(
    ("write", "media"),
    [
        (write_imagefolder, "zip"),
        (write_imagefolder, "manifest"),  # a folder layout has nowhere for a manifest
        (write_fiftyone, "hardlink"),
    ],
)
def test_an_unknown_media_is_refused(table, tmp_path, write, media):
    args = (CLASSES,) if write is write_fiftyone else ()
    out = tmp_path / "ds"
    with pytest.raises(BadInput, match=f"unknown media '{media}'"):
        write(table, out, *args, media=media)
    assert not out.exists()


@pytest.mark.parametrize(
    ("write", "media"),
    [
        (write_imagefolder, "copy"),
        (write_imagefolder, "symlink"),  # a link to nothing would be made without a check
        (write_fiftyone, "copy"),
        (write_fiftyone, "symlink"),
        (write_fiftyone, "manifest"),
    ],
)
def test_a_missing_image_is_named_and_nothing_is_left(table, tmp_path, write, media):
    gone = Path(table.loc[table.image_id == 13, "path"].item())
    gone.unlink()
    out = tmp_path / "new" / "ds"
    args = (CLASSES,) if write is write_fiftyone else ()
    with pytest.raises(BadInput, match=re.escape(str(gone))):
        write(table, out, *args, media=media)
    assert not out.parent.exists()  # not even the parent folder is made
    assert not list(tmp_path.rglob(".vecstore-*"))
    assert not out.exists()
    assert not list(tmp_path.glob(".vecstore-*"))


def test_a_failure_midway_leaves_nothing(table, tmp_path, monkeypatch):
    calls = []
    real_copy = shutil.copyfile

    def failing_copy(src, dst, *a, **k):
        calls.append(src)
        if len(calls) == 3:
            raise OSError(28, "No space left on device", str(dst))
        return real_copy(src, dst, *a, **k)

    monkeypatch.setattr(shutil, "copyfile", failing_copy)
    out = tmp_path / "ds"
    with pytest.raises(BadInput, match="No space left on device"):
        write_imagefolder(table, out)
    assert len(calls) == 3
    assert not out.exists()
    assert not list(tmp_path.glob(".vecstore-*"))
