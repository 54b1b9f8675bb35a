"""A CNN's input from one image, made where the image is decoded (a worker process: PIL and
numpy only, no torch). On the host: the reference preprocessing up to its last uint8 step,
resize 256 bilinear antialias and centre crop 224, exactly as torchvision's Resize and
CenterCrop do on a PIL image. For the device: the whole image as uint8 RGB, or a plain JPEG's
bytes as read, which the device decodes (vecstore.embedders.tensors finishes both)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .. import dicom
from ..imagefile import (
    DEFAULT_LIMITS,
    EXIF_ORIENTATION,
    decode_image,
    open_image_file,
    open_within,
    read_image_file,
)
from ..params import FileLimits
from .base import to_rgb

RESIZE = 256  # the short side, before the crop
CROP = 224  # the network's input, square
HOST, DEVICE = "host", "device"  # where the input is finished (vecstore.params.PREPROCESS)
JPEG_SOI = b"\xff\xd8\xff"
DEVICE_JPEG_MODES = ("L", "RGB")  # what every JPEG decoder turns into RGB the same way


@dataclass
class Prepared:
    """One image's input: ``kind`` "crop" (CROP x CROP x 3 uint8, finished on the host but
    for the float steps), "pixels" (H x W x 3 uint8, the whole image) or "jpeg" (the file's
    bytes, uint8, decoded on the device)."""

    kind: str
    data: np.ndarray


def resized_size(width: int, height: int, size: int = RESIZE) -> tuple[int, int]:
    """torchvision's Resize(size) of a width x height image: the short side to ``size``, the
    long side scaled and truncated to an integer."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)
    return (size, new_long) if width <= height else (new_long, size)


def centre_box(width: int, height: int, crop: int = CROP) -> tuple[int, int, int, int]:
    """torchvision's CenterCrop box (left, top, right, bottom): offsets rounded half to even,
    as Python's round does."""
    top, left = int(round((height - crop) / 2.0)), int(round((width - crop) / 2.0))
    return left, top, left + crop, top + crop


def host_crop(img: Image.Image) -> np.ndarray:
    """The reference input of a decoded image, as uint8 CROP x CROP x 3."""
    rgb = to_rgb(img)
    size = resized_size(*rgb.size)
    small = rgb if size == rgb.size else rgb.resize(size, Image.BILINEAR)
    return np.array(small.crop(centre_box(*small.size)))  # a copy torch may write to


def prepare_image(img: Image.Image, where: str) -> Prepared:
    """A decoded image's input: cropped here (``where`` HOST) or whole, for the device."""
    if where == HOST:
        return Prepared("crop", host_crop(img))
    return Prepared("pixels", np.array(to_rgb(img)))


def prepare_file(
    path: str | os.PathLike[str], where: str, limits: FileLimits = DEFAULT_LIMITS
) -> Prepared:
    """A stored file's input (a frame's path: that frame). For the device, a plain JPEG is
    not decoded here: its bytes go as read (see ``device_jpeg``)."""
    if where == DEVICE and dicom.split_frame(path)[1] is None:
        data, _ = read_image_file(path, limits)
        if device_jpeg(data, limits):
            return Prepared("jpeg", np.frombuffer(data, np.uint8))
        return prepare_image(decode_image(data, limits, path), where)
    return prepare_image(open_image_file(path, limits), where)


def device_jpeg(data: bytes, limits: FileLimits = DEFAULT_LIMITS) -> bool:
    """Whether a file's bytes are a JPEG the device decodes as PIL would: gray or RGB (no
    CMYK), upright as stored (no EXIF turn), within the pixel limit. Only its header is read;
    any doubt leaves it to PIL on the host."""
    if not data.startswith(JPEG_SOI):
        return False
    try:
        with open_within(data, limits.max_pixels) as im:
            return im.format == "JPEG" and im.mode in DEVICE_JPEG_MODES and _unturned(im)
    except Exception:  # beyond the limit or damaged: PIL on the host says why
        return False


def _unturned(im: Image.Image) -> bool:
    return im.getexif().get(EXIF_ORIENTATION, 1) in (1, 0)
