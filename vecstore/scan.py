"""Walk a folder for image files, hash their content, derive labels from folder names."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
DEFAULT_UNLABELED = ("unlabeled", "sans_label")


@dataclass(frozen=True)
class Found:
    """A candidate file. ``error`` is set when it cannot even be stat'ed (dangling link, loop)."""

    path: str
    size: int | None = None
    mtime_ns: int | None = None
    error: str | None = None


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def walk_images(root: str | os.PathLike[str]) -> Iterator[Found]:
    """Yield image files under ``root`` in a stable (sorted) order.

    Directory symlinks are followed, but a directory already visited (by device and inode) is
    not entered twice, so a symlink loop ends the descent instead of recursing forever.
    """
    root = os.path.abspath(root)
    seen: set[tuple[int, int]] = set()

    def visit(d: str) -> Iterator[Found]:
        try:
            st = os.stat(d)
        except OSError:
            return
        key = (st.st_dev, st.st_ino)
        if key in seen:
            return
        seen.add(key)
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            return
        subdirs = []
        for e in entries:
            try:
                if e.is_dir():  # follows symlinks; loops are cut by `seen`
                    subdirs.append(e.path)
                    continue
            except OSError:
                pass
            if not is_image_name(e.name):
                continue
            try:
                st = os.stat(e.path)
            except OSError as exc:
                yield Found(e.path, error=f"cannot stat file: {exc.strerror or exc}")
                continue
            if not os.path.isfile(e.path):
                yield Found(e.path, error="not a regular file")
                continue
            yield Found(e.path, size=st.st_size, mtime_ns=st.st_mtime_ns)
        for s in subdirs:
            yield from visit(s)

    yield from visit(root)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def folder_label(path: str, root: str, unlabeled: Iterable[str] = DEFAULT_UNLABELED) -> str | None:
    """The label a file gets from its parent folder, as torchvision's ImageFolder does.

    Files directly inside ``root`` get none (point ``root`` at the folder holding the class
    folders), nor do files in a folder named as unlabeled (case-insensitive).
    """
    parent = Path(path).parent
    if os.path.abspath(parent) == os.path.abspath(root):
        return None
    name = parent.name
    if name.strip().lower() in {u.strip().lower() for u in unlabeled}:
        return None
    return name
