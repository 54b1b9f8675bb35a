"""Folder walking, extension filter, symlink loops, labels from folder names."""

from __future__ import annotations

import os

from vecstore.ingest.scan import folder_label, walk_images

from .conftest import make_image


def test_walk_finds_image_extensions_in_any_case_recursively(tmp_path):
    for name in ["a.png", "b.JPG", "c.jpeg", "d.Bmp", "e.tif", "f.TIFF", "sub/deeper/g.PNG"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    for name in ["notes.txt", "noext", ".hidden.gif", "1.2.840.10008"]:
        (tmp_path / name).write_bytes(b"x")
    found = sorted(os.path.relpath(f.path, tmp_path) for f in walk_images(tmp_path))
    assert found == ["a.png", "b.JPG", "c.jpeg", "d.Bmp", "e.tif", "f.TIFF", "sub/deeper/g.PNG"]


def test_walk_finds_dicom_files_by_extension_or_by_their_preamble(tmp_path):
    """.dcm / .dicom files whatever they hold (a bad one fails with its reason later);
    a file with no extension or a UID for a name when it has the DICOM preamble (PACS
    exports name files so); a .txt file with the preamble is left alone."""
    dicom_head = bytes(128) + b"DICM" + b"rest"
    for name in ["a.dcm", "b.DICOM", "IM000001", "1.2.840.10008.5"]:
        (tmp_path / name).write_bytes(dicom_head)
    for name in ["IM000002", "1.2.840.10008.6", "notes.txt"]:
        (tmp_path / name).write_bytes(b"no preamble" if name != "notes.txt" else dicom_head)
    found = sorted(os.path.relpath(f.path, tmp_path) for f in walk_images(tmp_path))
    assert found == ["1.2.840.10008.5", "IM000001", "a.dcm", "b.DICOM"]


def test_symlink_loop_is_walked_once(tmp_path):
    make_image(tmp_path / "d" / "x.png", seed=1)
    os.symlink(tmp_path / "d", tmp_path / "d" / "loop")  # d/loop -> d
    os.symlink(tmp_path / "d" / "self.png", tmp_path / "d" / "self.png.lnk.png")
    os.symlink("self.png", tmp_path / "d" / "self.png")  # dangling chain
    found = list(walk_images(tmp_path))
    ok = [f for f in found if f.error is None]
    assert [os.path.basename(f.path) for f in ok] == ["x.png"]
    assert all(f.error for f in found if f.error is not None)


def test_folder_label_rules(tmp_path):
    root = str(tmp_path)
    assert folder_label(f"{root}/labeled/cancer/a.png", root) == "cancer"
    assert folder_label(f"{root}/normal/a.png", root) == "normal"
    assert folder_label(f"{root}/unlabeled/a.png", root) is None
    assert folder_label(f"{root}/Sans_Label/a.png", root) is None
    assert folder_label(f"{root}/a.png", root) is None  # the root itself is not a class
    assert folder_label(f"{root}/todo/a.png", root, unlabeled=["todo"]) is None
