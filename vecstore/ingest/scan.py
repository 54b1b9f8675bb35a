"""Walk a folder for image files (staying inside it, reporting what it leaves out) and derive
labels from folder names."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .. import dicom
from ..errors import BadInput, EmbedError
from ..imagefile import not_regular, open_regular
from ..params import DEFAULT_UNLABELED, FileLimits

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
ANY_SIZE = FileLimits(max_bytes=2**63 - 1)  # for a look at a file's first bytes only


@dataclass(frozen=True)
class Found:
    """A candidate file. ``error`` is set when it cannot even be stat'ed (dangling link, loop)."""

    path: str
    size: int | None = None
    mtime_ns: int | None = None
    error: str | None = None


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS | dicom.EXTENSIONS


def may_be_dicom(name: str) -> bool:
    """A name a PACS export gives a DICOM file: no extension (IM000001), or digits after the
    last dot (a UID, 1.2.840.113619.2.55); such a file is an image when it has the DICOM
    preamble."""
    ext = os.path.splitext(name)[1]
    return ext == "" or ext[1:].isdigit()


def has_dicom_preamble(path: str) -> bool:
    """The file starts with the DICOM preamble: a regular file opened as every image file is
    (imagefile.open_regular: a FIFO or a device is never read), whatever its size (one over
    the size limit is found here and fails with its reason when read)."""
    try:
        with open_regular(path, ANY_SIZE) as f:
            return dicom.has_preamble(f.read(dicom.PREAMBLE + 4))
    except (EmbedError, OSError):
        return False


def shown(path: str) -> str:
    """A path as it can be printed and stored: bytes that are not UTF-8 escaped (\\xff)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def walk_images(
    root: str | os.PathLike[str],
    follow_links: bool = False,
    skipped: Callable[[tuple[str, str]], None] = lambda item: None,
) -> Iterator[Found]:
    """Yield image files under ``root`` in a stable (sorted) order; what is left out is
    passed to ``skipped`` as (path shown, reason): a name that is not UTF-8 (a path SQLite
    cannot store), a link leaving ``root`` (unless ``follow_links``), a folder that cannot be
    read.

    Directory symlinks are followed, but a directory already visited (by device and inode) is
    not entered twice, so a symlink loop ends the descent instead of recursing forever.
    """
    top = os.path.abspath(root)
    check_folder_name(top)
    walk = _Walk(os.path.realpath(top), follow_links, skipped)
    yield from walk.visit(top)


def check_folder_name(path: str) -> None:
    """A folder whose path SQLite cannot store (not UTF-8) is refused with a message."""
    if not _is_utf8(path):
        raise BadInput(f"the folder name {shown(path)} is not valid UTF-8: rename it")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes of the name, kept as surrogates
        return False
    return True


class _Walk:
    """One walk: the folders seen (by device and inode), where ``root`` really is, and what
    to do with the entries left out."""

    def __init__(
        self, real_root: str, follow_links: bool, skipped: Callable[[tuple[str, str]], None]
    ) -> None:
        self.real_root = real_root
        self.follow_links = follow_links
        self.skipped = skipped
        self.seen: set[tuple[int, int]] = set()

    def visit(self, d: str) -> Iterator[Found]:
        subdirs = []
        for e in self._entries_once(d):
            is_dir = _is_dir(e)
            if not (is_dir or is_image_name(e.name) or _dicom_without_extension(e)):
                continue
            why = self._refused(e, is_dir)
            if why is not None:
                self.skipped((shown(e.path), why))
            elif is_dir:
                subdirs.append(e.path)
            else:
                yield _found(e.path)
        for sub in subdirs:
            yield from self.visit(sub)

    def _refused(self, e: os.DirEntry, is_dir: bool) -> str | None:
        """Why an entry is left out, or None."""
        if not _is_utf8(e.name):
            return f"{'folder' if is_dir else 'file'} name is not valid UTF-8: rename it"
        if self.follow_links or not _is_link(e):
            return None
        target = os.path.realpath(e.path)
        if os.path.commonpath([target, self.real_root]) == self.real_root:
            return None
        return f"link leaves DIR (to {shown(target)}); --follow-links to ingest it"

    def _entries_once(self, d: str) -> list[os.DirEntry]:
        """The entries of folder ``d`` sorted by name; none when it was seen already or
        cannot be read (then reported)."""
        try:
            st = os.stat(d)
            key = (st.st_dev, st.st_ino)
            if key in self.seen:
                return []
            self.seen.add(key)
            with os.scandir(d) as it:
                return sorted(it, key=lambda e: e.name)
        except OSError as exc:
            self.skipped((shown(d), f"cannot read folder: {exc.strerror or exc}"))
            return []


def _dicom_without_extension(entry: os.DirEntry) -> bool:
    return may_be_dicom(entry.name) and has_dicom_preamble(entry.path)


def _is_link(entry: os.DirEntry) -> bool:
    try:
        return entry.is_symlink()
    except OSError:
        return False


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
    why = not_regular(st.st_mode)
    if why is not None:
        return Found(path, error=why)
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
