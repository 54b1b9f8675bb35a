"""The one way vecstore opens an image file: a regular file only (a FIFO would hang, a device
never end), at most ``FileLimits.max_bytes`` long (refused from its size, unread), hashed in
streamed chunks, decoded only when it declares at most ``max_pixels`` pixels (a small file can
declare a huge image: a decompression bomb), and turned upright by its EXIF orientation.
Every refusal is an EmbedError whose message says why."""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from PIL import Image, ImageOps

from . import dicom
from .errors import EmbedError
from .files import HASH_CHUNK
from .params import FileLimits

DEFAULT_LIMITS = FileLimits()
OUT_OF_MEMORY = "out of memory reading this image: it is too large for this machine"
EXIF_ORIENTATION = 0x0112
_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a folder",
}


def not_regular(mode: int) -> str | None:
    """Why a file of this st_mode is not read as an image, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    kind = _KINDS.get(stat.S_IFMT(mode), "not a file")
    return f"not a regular file ({kind}): vecstore reads only image files"


def human_size(n: int) -> str:
    """1536 -> '1.5 KiB'."""
    size, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"


def _check(st: os.stat_result, limits: FileLimits) -> None:
    why = not_regular(st.st_mode)
    if why is None and st.st_size > limits.max_bytes:
        why = (
            f"file of {human_size(st.st_size)} ({st.st_size} bytes) is over the size limit of "
            f"{human_size(limits.max_bytes)} (--max-file-size)"
        )
    if why is not None:
        raise EmbedError(why)


@contextmanager
def open_regular(path: str | os.PathLike[str], limits: FileLimits) -> Iterator[IO[bytes]]:
    """The file opened for reading, when it is a regular file within ``limits.max_bytes``.
    Checked before opening (a device is never opened) and again on the open file (it may have
    been swapped since); O_NONBLOCK, so that opening a FIFO returns instead of waiting."""
    try:
        _check(os.stat(path), limits)
        f = open(path, "rb", opener=_nonblocking)  # closed by the `with` below
    except OSError as exc:
        raise EmbedError(f"cannot read file: {exc.strerror or exc}") from exc
    with f:
        _check(os.fstat(f.fileno()), limits)
        yield f


def _nonblocking(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NONBLOCK | os.O_NOCTTY)


def _chunks(f: IO[bytes], limits: FileLimits) -> Iterator[bytes]:
    """The file's bytes in HASH_CHUNK pieces; one that grew past the limit is refused."""
    total = 0
    try:
        while chunk := f.read(HASH_CHUNK):
            total += len(chunk)
            if total > limits.max_bytes:
                raise EmbedError(
                    f"file grew over the size limit of {human_size(limits.max_bytes)} while "
                    "being read (--max-file-size)"
                )
            yield chunk
    except OSError as exc:
        raise EmbedError(f"cannot read file: {exc.strerror or exc}") from exc


def read_image_file(
    path: str | os.PathLike[str], limits: FileLimits = DEFAULT_LIMITS
) -> tuple[bytes, str]:
    """The bytes of an image file (a frame's: of its file) and their sha256, read once, in
    chunks."""
    h, parts = hashlib.sha256(), []
    try:
        with open_regular(dicom.file_of(path), limits) as f:
            for chunk in _chunks(f, limits):
                h.update(chunk)
                parts.append(chunk)
        return b"".join(parts), h.hexdigest()
    except MemoryError as exc:
        raise EmbedError(OUT_OF_MEMORY) from exc


def sha256_image_file(path: str | os.PathLike[str], limits: FileLimits = DEFAULT_LIMITS) -> str:
    """The content hash of an image file: the sha256 of its bytes, streamed in chunks (never
    held whole); of a DICOM file, the hash of its pixel data, of one of its frames, that
    frame's (vecstore.dicom)."""
    if dicom.split_frame(path)[1] is not None:
        return _frame_of(path, limits).content_sha256
    with open_regular(path, limits) as f:
        chunks = _chunks(f, limits)
        first = next(chunks, b"")  # HASH_CHUNK bytes: the DICOM preamble and prefix in them
        if dicom.is_dicom(first, path):
            return dicom.content_sha256(read_image_file(path, limits)[0])
        h = hashlib.sha256(first)
        for chunk in chunks:
            h.update(chunk)
    return h.hexdigest()


def open_image_file(
    path: str | os.PathLike[str], limits: FileLimits = DEFAULT_LIMITS
) -> Image.Image:
    """An image file read (see ``read_image_file``) and decoded (see ``decode_image``); a
    frame's path (vecstore.dicom.frame_path), that frame of its DICOM file."""
    if dicom.split_frame(path)[1] is not None:
        return _frame_of(path, limits).image
    return decode_image(read_image_file(path, limits)[0], limits, path)


def _frame_of(path: str | os.PathLike[str], limits: FileLimits) -> dicom.DicomImage:
    number = dicom.split_frame(path)[1]
    return dicom.decode_dicom(read_image_file(path, limits)[0], limits.max_pixels, number)


def decode_image(
    data: bytes, limits: FileLimits = DEFAULT_LIMITS, path: str | os.PathLike[str] | None = None
) -> Image.Image:
    """Decode the bytes of an image whole (a truncated file fails here, not later), upright:
    refused before decoding when it declares more than ``limits.max_pixels`` pixels. A DICOM
    file (by its preamble, or ``path``'s extension) is decoded by vecstore.dicom."""
    if dicom.is_dicom(data, path):
        return dicom.decode_dicom(data, limits.max_pixels).image
    try:
        img = open_within(data, limits.max_pixels)
        img.load()
        return upright(img)
    except EmbedError:
        raise
    except MemoryError as exc:
        raise EmbedError(OUT_OF_MEMORY) from exc
    except Image.DecompressionBombError as exc:  # Pillow's own check, at twice its limit
        m = re.search(r"\((\d+) pixels\)", str(exc))
        what = f"image of {m.group(1)} pixels" if m else "image"
        raise EmbedError(_too_many_pixels(what, limits.max_pixels)) from exc
    except Exception as exc:  # PIL raises many types for bad files
        raise EmbedError(describe_decode_error(exc)) from exc


def open_within(data: bytes, max_pixels: int) -> Image.Image:
    """The image opened (its header read, nothing decoded), when within ``max_pixels``.

    Pillow checks sizes too, against its global Image.MAX_IMAGE_PIXELS: raised (never
    lowered) to ``max_pixels``, so that the limit asked for is the one that holds, and its
    warning silenced (the size is checked here)."""
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(io.BytesIO(data))
    w, h = img.size
    if w * h > max_pixels:
        raise EmbedError(_too_many_pixels(f"image of {w}x{h} = {w * h} pixels", max_pixels))
    return img


def _too_many_pixels(what: str, max_pixels: int) -> str:
    return (
        f"{what}, over the limit of {max_pixels} pixels (--max-pixels): not decoded "
        "(a decompression bomb, or an image too large)"
    )


def upright(img: Image.Image) -> Image.Image:
    """The image as a viewer shows it: turned by its EXIF orientation tag (2 to 8). EXIF
    that cannot be read leaves the image as stored."""
    try:
        turned = img.getexif().get(EXIF_ORIENTATION, 1) in (2, 3, 4, 5, 6, 7, 8)
    except Exception:  # damaged EXIF: the pixels themselves are fine
        return img
    return ImageOps.exif_transpose(img) if turned else img


def describe_decode_error(exc: BaseException) -> str:
    if isinstance(exc, Image.UnidentifiedImageError):
        return "not an image (format not recognised)"
    if isinstance(exc, OSError) and "truncated" in str(exc).lower():
        return f"truncated or corrupt image: {exc}"
    if isinstance(exc, Image.DecompressionBombError):
        return f"image too large to decode safely: {exc}"
    return f"cannot decode image: {type(exc).__name__}: {exc}"
