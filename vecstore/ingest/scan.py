"""Walk a folder for image files and derive labels from folder names."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..params import DEFAULT_UNLABELED

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})


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
    seen: set[tuple[int, int]] = set()

    def visit(d: str) -> Iterator[Found]:
        subdirs = []
        for e in _entries_once(d, seen):
            if _is_dir(e):
                subdirs.append(e.path)
            elif is_image_name(e.name):
                yield _found(e.path)
        for sub in subdirs:
            yield from visit(sub)

    yield from visit(os.path.abspath(root))


def _entries_once(d: str, seen: set[tuple[int, int]]) -> list[os.DirEntry]:
    """The entries of folder ``d`` sorted by name; none when it was seen already or cannot
    be read."""
    try:
        st = os.stat(d)
    except OSError:
        return []
    key = (st.st_dev, st.st_ino)
    if key in seen:
        return []
    seen.add(key)
    try:
        with os.scandir(d) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError:
        return []


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows symlinks; loops are cut by `seen`
    except OSError:
        return False


def _found(path: str) -> Found:
    try:
        st = os.stat(path)
    except OSError as exc:
        return Found(path, error=f"cannot stat file: {exc.strerror or exc}")
    if not os.path.isfile(path):
        return Found(path, error="not a regular file")
    return Found(path, size=st.st_size, mtime_ns=st.st_mtime_ns)


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
