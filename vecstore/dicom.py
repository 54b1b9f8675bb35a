"""DICOM files as images, read with pydicom.

Which files: a name ending in .dcm or .dicom, or any file with the DICOM preamble ("DICM" at
byte 128; PACS exports often have no extension, or a UID for a name). A .dcm file without the
preamble (an old or stripped file) is read anyway, as pydicom does with ``force``.

What the image is: what a DICOM viewer shows by default. The pixel data decoded by pydicom's
own handlers (compressed transfer syntaxes through the optional decoders pydicom documents;
one that is missing is named in the file's error); the Modality LUT (Rescale Slope and
Intercept) applied, then the file's first VOI LUT or window (Window Center / Width), both with
pydicom's helpers; the result scaled from the VOI's output range to 8 bits (without a VOI, the
image's own range); MONOCHROME1 inverted (its 0 is white); PALETTE COLOR through its colour
LUT; colour kept as RGB. A multi-frame file gives its middle frame; or (``iter_frames``,
`ingest --frames all`) one image per frame, each under the path ``frame_path(file, n)``,
``file#frame=n`` with n from 1, which ``split_frame`` reads back.

What the image's identity is: the sha256 of its pixel data (with rows, columns, frames and
sample layout), not of the file's bytes, so that the same pixels under two SOP instance UIDs,
or re-written with another header (anonymised), are one image. A frame of its own: the sha256
of that frame's stored values and the same layout.

What is kept of the header: ``TAGS``, as metadata columns of the image. ``IDENTIFYING`` are the
ones that point at a patient or an examination; exports leave them out unless asked.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .errors import EmbedError

if TYPE_CHECKING:  # pragma: no cover
    from pydicom.dataset import Dataset

EXTENSIONS = frozenset({".dcm", ".dicom"})
PREAMBLE = 128  # bytes before the "DICM" prefix
TAGS = (
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "Modality",
    "BodyPartExamined",
    "SeriesDescription",
    "SliceLocation",
    "PixelSpacing",
)
IDENTIFYING = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
FRAME_MARK = "#frame="  # a frame's path: the file's, this, its number from 1
_FRAME_PATH = re.compile(r"(.+)" + re.escape(FRAME_MARK) + r"([1-9][0-9]*)")


@dataclass
class DicomImage:
    """One frame of a DICOM file as an image, with what the file says about it."""

    image: Image.Image
    content_sha256: str  # of the pixel data: see the module's docstring
    tags: dict[str, Any] = field(default_factory=dict)  # TAGS present in the file
    frames: int = 1
    frame: int = 0  # the frame shown (0-based)


def has_dicom_name(path: str | os.PathLike[str] | None) -> bool:
    return path is not None and os.path.splitext(str(path))[1].lower() in EXTENSIONS


def has_preamble(head: bytes) -> bool:
    """The first bytes of a file hold the DICOM preamble and prefix."""
    return head[PREAMBLE : PREAMBLE + 4] == b"DICM"


def is_dicom(data: bytes, path: str | os.PathLike[str] | None = None) -> bool:
    return has_preamble(data) or has_dicom_name(path)


def frame_path(path: str, number: int) -> str:
    """The path of frame ``number`` (from 1) of the file at ``path``."""
    return f"{path}{FRAME_MARK}{number}"


def split_frame(path: str | os.PathLike[str]) -> tuple[str, int | None]:
    """(the file, the frame number from 1) of a frame's path; (path, None) for a file's."""
    m = _FRAME_PATH.fullmatch(str(path))
    return (m.group(1), int(m.group(2))) if m else (str(path), None)


def file_of(path: str | os.PathLike[str]) -> str:
    """The file behind an image's path: a frame's DICOM file, else the path itself."""
    return split_frame(path)[0]


def file_exists(path: str | os.PathLike[str]) -> bool:
    """Whether the file behind an image's path (``file_of``) is on disk."""
    return os.path.exists(file_of(path))


def decode_dicom(data: bytes, max_pixels: int, number: int | None = None) -> DicomImage:
    """The image a DICOM file shows (see the module's docstring): the middle frame, or frame
    ``number`` (from 1) as an image of its own; an EmbedError that says why when it holds
    none: not DICOM, truncated, no pixel data, a decoder missing, too large, no such frame."""
    ds, frames = _checked(data, max_pixels)
    if number is None:
        return _middle(ds, frames)
    if not 1 <= number <= frames:
        raise EmbedError(f"the DICOM file has {frames} frame(s): there is no frame {number}")
    return _frame(ds, frames, number - 1)


def iter_frames(data: bytes, max_pixels: int) -> Iterator[DicomImage]:
    """Every frame of a multi-frame DICOM file as an image of its own, first to last; a
    single-frame file: its one image (as ``decode_dicom`` gives it)."""
    ds, frames = _checked(data, max_pixels)
    if frames == 1:
        yield _middle(ds, frames)
        return
    for frame in range(frames):
        yield _frame(ds, frames, frame)


def _checked(data: bytes, max_pixels: int) -> tuple[Dataset, int]:
    """The dataset and its number of frames, when its frames are within ``max_pixels``."""
    ds = _read(data)
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if rows * cols > max_pixels:
        raise EmbedError(
            f"DICOM image of {cols}x{rows} = {rows * cols} pixels, over the limit of "
            f"{max_pixels} pixels (--max-pixels): not decoded"
        )
    return ds, max(int(ds.get("NumberOfFrames") or 1), 1)


def _middle(ds: Dataset, frames: int) -> DicomImage:
    """The middle frame (the only one of a single-frame file), with the file's identity."""
    frame = frames // 2
    arr = _pixels(ds, frame if frames > 1 else None)
    image = Image.fromarray(_display(arr, ds))
    return DicomImage(image, _content_sha256(ds, frames), tags_of(ds), frames, frame)


def _frame(ds: Dataset, frames: int, frame: int) -> DicomImage:
    """Frame ``frame`` (0-based) of a multi-frame file, with the identity of its values."""
    arr = _pixels(ds, frame)
    h = hashlib.sha256(f"frame of {_content_sha256(ds, 1, with_data=False)}\n".encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    image = Image.fromarray(_display(arr, ds))
    return DicomImage(image, h.hexdigest(), tags_of(ds), frames, frame)


def content_sha256(data: bytes) -> str:
    """The identity of a DICOM file's image without decoding its pixels."""
    ds = _read(data)
    return _content_sha256(ds, max(int(ds.get("NumberOfFrames") or 1), 1))


def tags_of(ds: Dataset) -> dict[str, Any]:
    """The TAGS the file has, as JSON values: numbers stay numbers, a multi-valued element
    is written as DICOM writes it (values joined by a backslash)."""
    out: dict[str, Any] = {}
    for name in TAGS:
        value = ds.get(name)
        if value is None or value == "":
            continue
        out[name] = _json_value(value)
    return out


def _json_value(value: Any) -> Any:
    from pydicom.multival import MultiValue

    if isinstance(value, MultiValue):
        return "\\".join(str(v) for v in value)
    if isinstance(value, int | float):
        return float(value) if isinstance(value, float) else int(value)
    return str(value)


def _read(data: bytes) -> Dataset:
    """The dataset of a DICOM file (a file without the preamble read as pydicom's ``force``
    reads it); errors say what is wrong with the file."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=not has_preamble(data))
    except InvalidDicomError as exc:
        raise EmbedError(f"not a DICOM file pydicom can read: {exc}") from exc
    except (EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        raise EmbedError(f"truncated or corrupt DICOM file: {type(exc).__name__}: {exc}") from exc
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        kind = ds.get("Modality") or ds.get("SOPClassUID", "unknown")
        raise EmbedError(
            f"DICOM file without pixel data (not an image: {kind}); "
            "only DICOM images can be ingested"
        )
    return ds


def _pixels(ds: Dataset, frame: int | None) -> np.ndarray:
    """The stored values of one frame (all of a single-frame file)."""
    from pydicom.pixels import pixel_array

    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    try:
        return pixel_array(ds, index=frame)
    except MemoryError as exc:
        raise EmbedError("out of memory decoding this DICOM image") from exc
    except (NotImplementedError, RuntimeError) as exc:  # no plugin for this transfer syntax
        name = getattr(syntax, "name", None) or syntax or "unknown transfer syntax"
        raise EmbedError(
            f"DICOM pixel data in {name} cannot be decoded here: a decoder pydicom uses for it "
            f"is not installed (see pydicom's guide to compressed pixel data); pydicom said: "
            f"{' '.join(str(exc).split())}"
        ) from exc
    except (ValueError, EOFError, KeyError, AttributeError, TypeError) as exc:
        raise EmbedError(
            f"truncated or corrupt DICOM pixel data: {' '.join(str(exc).split())}"
        ) from exc


def _display(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """uint8 gray (rows, cols) or RGB (rows, cols, 3) as a viewer shows the frame."""
    from pydicom.pixels import apply_color_lut, apply_modality_lut

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        return _to_uint8(apply_color_lut(arr, ds), 0, _sample_max(arr))
    if arr.ndim == 3:  # colour, already RGB (pydicom converts YBR)
        return _to_uint8(arr, 0, _sample_max(arr))
    values = apply_modality_lut(arr, ds)
    lo, hi, values = _voi(values, ds)
    gray = _to_uint8(values, lo, hi)
    return 255 - gray if photometric == "MONOCHROME1" else gray


def _voi(values: np.ndarray, ds: Dataset) -> tuple[float, float, np.ndarray]:
    """(low, high, values): the file's first VOI LUT or window applied, with the ends of its
    output range (found by passing the two ends of the input's type through it, as it is
    applied value by value); without one, the values and their own range."""
    from pydicom.pixels import apply_voi_lut

    has_window = "WindowCenter" in ds and "WindowWidth" in ds
    if not (has_window or "VOILUTSequence" in ds):
        return float(values.min()), float(values.max()), values
    try:
        out = apply_voi_lut(values, ds, index=0)
        ends = apply_voi_lut(_type_ends(values.dtype), ds, index=0)
    except (ValueError, TypeError, IndexError, KeyError) as exc:  # a window pydicom refuses
        raise EmbedError(f"DICOM VOI LUT or window cannot be applied: {exc}") from exc
    return float(np.min(ends)), float(np.max(ends)), out


def _type_ends(dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.array([info.min, info.max], dtype=dtype)
    return np.array([-1e12, 1e12], dtype=dtype)


def _sample_max(arr: np.ndarray) -> float:
    """The largest value a colour sample can take (8 or 16 bits)."""
    return 65535.0 if arr.dtype.itemsize > 1 else 255.0


def _to_uint8(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        return np.zeros(values.shape, np.uint8)
    scaled = (np.asarray(values, np.float64) - lo) / (hi - lo)
    return np.clip(np.round(scaled * 255.0), 0, 255).astype(np.uint8)


def _content_sha256(ds: Dataset, frames: int, with_data: bool = True) -> str:
    """sha256 of the pixel data element's bytes (``with_data``) and the facts that say how
    to lay them out."""
    layout = (
        ds.get("Rows"),
        ds.get("Columns"),
        frames,
        ds.get("SamplesPerPixel"),
        ds.get("BitsAllocated"),
        ds.get("BitsStored"),
        ds.get("PixelRepresentation"),
        ds.get("PlanarConfiguration"),
        str(ds.get("PhotometricInterpretation", "")),
    )
    h = hashlib.sha256(f"DICOM pixel data {layout}\n".encode())
    if with_data:
        for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
            if keyword in ds:
                h.update(ds[keyword].value)
    return h.hexdigest()
