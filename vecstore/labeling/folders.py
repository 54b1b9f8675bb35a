"""The pseudo-label table (vecstore.labeling.export) out as a dataset folder that a training
tool reads as it is: torchvision's ImageFolder layout (``out/<label>/<file>``) or FiftyOne's
FiftyOneImageClassificationDataset (``out/data/<uuid>.<ext>`` and ``out/labels.json``, or a
``data.json`` manifest of the originals instead of ``data/``). Only labeled images go out; the
images are copied, linked (absolute symlinks) or listed. The folder is built beside ``out``
and renamed to it at the end: whole or not at all, never into a folder that holds files."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import dicom
from ..errors import BadInput
from ..params import FOLDER_MEDIA

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

COLUMNS = ("image_id", "path", "label", "confidence")  # what the exports read of the table
TEMP_PREFIX = ".vecstore-"  # the folder an export is built in, beside its target
_UNSAFE_IN_NAME = ("/", "\\", "\0")


@dataclass
class FolderExport:
    """What a folder export wrote: its folder, the images in it, the rows left out for want
    of a label, the images per class and how the images went in (copy, symlink, manifest)."""

    path: str
    images: int
    skipped_unlabeled: int
    classes: dict[str, int]
    media: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Item:
    """A labeled image to export: ``name`` is its file name in the export,
    ``<image_id>_<original file name>`` (unique and stable), its stem the FiftyOne uuid."""

    src: str
    name: str
    label: str
    confidence: float | None

    @property
    def uuid(self) -> str:
        return os.path.splitext(self.name)[0]


def write_imagefolder(
    df: pd.DataFrame, out: str | os.PathLike[str], media: str = "copy"
) -> FolderExport:
    """Write the labeled images of ``df`` to ``out`` as ``out/<label>/<image_id>_<file>``, the
    layout torchvision's ImageFolder reads (classes: the folder names, sorted). ``media``:
    "copy" the files or "symlink" to them. Raises BadInput, before anything is written, for
    a label that is no folder name, an ``out`` that is a file or a folder with files in it, or
    an image no longer on disk."""
    _check_media(media, "imagefolder")
    items, skipped = _labeled(df)
    for label in sorted({it.label for it in items}):
        _check_folder_name(label)
    real = _target(out)
    _check_sources(items)
    put = _putter(media)

    def fill(stage: Path) -> None:
        for label in sorted({it.label for it in items}):
            (stage / label).mkdir()
        for it in items:
            put(it.src, stage / it.label / it.name)

    _build(out, real, fill)
    counts = Counter(it.label for it in items)
    return FolderExport(str(out), len(items), skipped, dict(sorted(counts.items())), media)


def write_fiftyone(
    df: pd.DataFrame,
    out: str | os.PathLike[str],
    classes: Sequence[str] | None,
    media: str = "copy",
) -> FolderExport:
    """Write the labeled images of ``df`` to ``out`` as a FiftyOneImageClassificationDataset:
    ``labels.json`` = ``{"classes": [...], "labels": {uuid: {"label": <index into classes>,
    "confidence": <float>}}}`` (FiftyOne's documented form: with ``classes`` given, a target
    is a class index) and the images in ``data/`` ("copy" or "symlink"), or with "manifest"
    no ``data/`` but ``data.json`` mapping each ``<uuid>.<ext>`` to the original's absolute
    path (FiftyOne's importer drops the extension of a manifest key; read it with
    ``data_path="data.json"``, which the importer does not look for by itself).
    ``classes``: the class order (the run's); a label not among them is added after them.
    Raises BadInput as write_imagefolder does (any label goes: none is a folder name)."""
    _check_media(media, "fiftyone")
    items, skipped = _labeled(df, fiftyone=True)
    names = _class_list(classes, items)
    index = {c: i for i, c in enumerate(names)}
    real = _target(out)
    _check_sources(items)

    def fill(stage: Path) -> None:
        if media == "manifest":
            _write_json(stage / "data.json", {it.name: os.path.abspath(it.src) for it in items})
        else:
            put = _putter(media)
            (stage / "data").mkdir()
            for it in items:
                put(it.src, stage / "data" / it.name)
        labels = {it.uuid: {"label": index[it.label], "confidence": it.confidence} for it in items}
        _write_json(stage / "labels.json", {"classes": names, "labels": labels})

    _build(out, real, fill)
    counts = Counter(it.label for it in items)
    return FolderExport(str(out), len(items), skipped, {c: counts[c] for c in names}, media)


def _check_media(media: str, fmt: str) -> None:
    allowed = FOLDER_MEDIA[fmt]
    if media not in allowed:
        raise BadInput(
            f"unknown media {media!r} for a {fmt} export: use one of {', '.join(allowed)}"
        )


def _labeled(df: pd.DataFrame, fiftyone: bool = False) -> tuple[list[_Item], int]:
    """The rows of ``df`` that have a label, as items, and how many have none."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise BadInput(f"the pseudo-label table lacks the column(s) {', '.join(missing)}")
    items: list[_Item] = []
    seen: set[str] = set()
    skipped = 0
    for iid, path, label, conf in zip(df["image_id"], df["path"], df["label"], df["confidence"]):
        if _unlabeled(label):
            skipped += 1
            continue
        name = f"{int(iid)}_{os.path.basename(str(path))}"
        if fiftyone:  # FiftyOne reads a backslash in a uuid as a folder separator
            name = name.replace("\\", "_")
        if name in seen:
            raise BadInput(f"image {int(iid)} appears twice in the pseudo-label table")
        seen.add(name)
        items.append(_Item(str(path), name, str(label), _confidence(conf)))
    return items, skipped


def _unlabeled(label: Any) -> bool:
    import pandas as pd

    return label == "" if isinstance(label, str) else bool(pd.isna(label))


def _confidence(value: Any) -> float | None:
    try:
        c = float(value)
    except (TypeError, ValueError):
        return None
    return c if math.isfinite(c) else None


def _check_folder_name(label: str) -> None:
    if label in ("", ".", "..") or any(ch in label for ch in _UNSAFE_IN_NAME):
        raise BadInput(
            f"label {label!r} cannot be a folder name (it is empty, '.' or '..', or holds "
            "'/', '\\' or a NUL): rename that class, or export it as fiftyone"
        )


def _class_list(classes: Sequence[str] | None, items: list[_Item]) -> list[str]:
    """``classes`` in their order (once each), then the labels they lack, sorted."""
    names = list(dict.fromkeys(str(c) for c in classes or ()))
    known = set(names)
    return names + sorted({it.label for it in items} - known)


def _target(out: str | os.PathLike[str]) -> Path:
    """The folder the export becomes (``out`` through its links): new, or an empty folder."""
    real = Path(os.path.realpath(out))
    try:
        if real.is_dir():
            if any(real.iterdir()):
                raise BadInput(
                    f"{out} is a folder with files in it: an export never writes into one; "
                    "give a new or an empty folder"
                )
        elif os.path.lexists(real):
            raise BadInput(f"{out} exists and is not a folder: give a new or an empty folder")
    except OSError as exc:
        raise BadInput(f"cannot write {out}: {_why(exc)}") from exc
    return real


def _check_sources(items: list[_Item]) -> None:
    frames = [it.src for it in items if dicom.split_frame(it.src)[1] is not None]
    if frames:
        raise BadInput(
            f"{frames[0]} is a frame of a multi-frame DICOM file ({len(frames)} frame images): "
            "a folder export copies or links files, not frames; export them as csv or "
            "label-studio"
        )
    gone = [it.src for it in items if not os.path.isfile(it.src)]
    if gone:
        more = f" (and {len(gone) - 1} more)" if len(gone) > 1 else ""
        raise BadInput(
            f"image file no longer on disk: {gone[0]}{more}; restore it, or ingest its folder "
            "again, then export again"
        )


def _putter(media: str) -> Callable[[str, Path], None]:
    """How an image goes into the export: its bytes copied, or an absolute symlink to it."""
    if media == "symlink":
        return lambda src, dst: os.symlink(os.path.abspath(src), dst)
    return lambda src, dst: shutil.copyfile(src, dst)


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f)


def _build(out: str | os.PathLike[str], real: Path, fill: Callable[[Path], None]) -> None:
    """Make missing parent folders, let ``fill`` write the export in a temporary folder beside
    ``real`` and rename it to ``real`` (over an empty folder); on any failure nothing stays."""
    try:
        real.parent.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=real.parent, prefix=TEMP_PREFIX)
    except OSError as exc:
        raise BadInput(f"cannot write {out}: {_why(exc)}") from exc
    try:
        stage = Path(tmp) / "export"
        stage.mkdir()  # made as any folder is (mkdtemp's is private to this user)
        fill(stage)
        os.rename(stage, real)
    except OSError as exc:
        raise BadInput(f"cannot write {out}: {_why(exc)}; nothing was written") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # links in it are removed, never followed


def _why(exc: OSError) -> str:
    why = exc.strerror or str(exc)
    return f"{exc.filename}: {why}" if exc.filename else why
