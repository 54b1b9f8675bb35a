"""The CNN's input batch on its device, from prepared images (vecstore.embedders.prepare):
JPEG bytes decoded there as one batch (nvJPEG on CUDA, libjpeg-turbo on the CPU), whole
images resized (bilinear, antialias) and centre-cropped there, grouped by size; then every
image scaled to [0, 1] and normalised with the ImageNet mean and std. Host crops are only
scaled and normalised: the same float operations as torchvision's ToTensor and Normalize,
so the host path gives the reference vectors exactly. torch is imported by the caller."""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from ..errors import EmbedError
from ..imagefile import decode_image
from .prepare import CROP, DEVICE, RESIZE, Prepared, prepare_image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def input_batch(items: Sequence[Prepared], device: str):
    """(the N x 3 x CROP x CROP float32 input on ``device`` of the items it could make, their
    positions in ``items``, (position, error) of the others)."""
    import torch

    done: dict[int, torch.Tensor] = {}  # position -> 3 x CROP x CROP uint8 on the device
    failed: list[tuple[int, str]] = []
    crops = [i for i, p in enumerate(items) if p.kind == "crop"]
    if crops:
        x = _to_device(torch.from_numpy(np.stack([items[i].data for i in crops])), device)
        done.update(zip(crops, x.permute(0, 3, 1, 2), strict=True))
    whole = _decode_jpegs(items, device, failed)
    for i, p in enumerate(items):
        if p.kind == "pixels":
            whole[i] = _pixels_on(p.data, device)
    done.update(_resize_and_crop(whole))
    kept = sorted(done)
    if not kept:
        return torch.zeros(0, 3, CROP, CROP, device=device), kept, failed
    return normalise(torch.stack([done[i] for i in kept])), kept, failed


def normalise(x):
    """uint8 N x 3 x H x W to float32 in [0, 1], minus the mean, over the std (in that order,
    as ToTensor then Normalize)."""
    import torch

    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return x.float().div(255).sub_(mean).div_(std)


def _to_device(t, device: str):
    """A host tensor on the device; to a GPU from pinned memory, without waiting."""
    if device.startswith("cuda"):
        return t.pin_memory().to(device, non_blocking=True)
    return t


def _pixels_on(pixels: np.ndarray, device: str):
    """H x W x 3 uint8 host pixels as 3 x H x W on the device."""
    import torch

    return _to_device(torch.from_numpy(pixels), device).permute(2, 0, 1)


def _decode_jpegs(items: Sequence[Prepared], device: str, failed: list[tuple[int, str]]):
    """position -> 3 x H x W uint8 on the device of the JPEG items, decoded in one batch;
    when the batch fails, one by one, and what the device cannot decode, by PIL on the host
    (an error only when PIL cannot either)."""
    import torch

    at = [i for i, p in enumerate(items) if p.kind == "jpeg"]
    if not at:
        return {}
    data = [torch.from_numpy(items[i].data.copy()) for i in at]
    try:
        return dict(zip(at, _decode(data, device), strict=True))
    except RuntimeError:
        pass
    out = {}
    for i, d in zip(at, data, strict=True):
        try:
            out[i] = _one_jpeg(d, device)
        except EmbedError as exc:
            failed.append((i, str(exc)))
    return out


def _one_jpeg(data, device: str):
    """One JPEG's 3 x H x W uint8 on the device: decoded there, else by PIL on the host (an
    EmbedError that says why when PIL cannot either)."""
    try:
        return _decode([data], device)[0]
    except RuntimeError:
        pixels = prepare_image(decode_image(data.numpy().tobytes()), DEVICE).data
        return _pixels_on(pixels, device)


def _decode(data: list, device: str) -> list:
    """torchvision's JPEG decoder, to RGB (gray replicated, as PIL does)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():  # torchvision 0.29 points at TorchCodec; see the README
        warnings.simplefilter("ignore")
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


def _resize_and_crop(images: dict) -> dict:
    """position -> 3 x CROP x CROP uint8: the short side to RESIZE (bilinear, antialias,
    rounded to uint8 as PIL's resize is), then the centre crop; images of one size go as one
    batch."""
    import torch
    from torchvision.transforms.v2 import functional as F

    by_size = defaultdict(list)
    for i, img in images.items():
        by_size[tuple(img.shape)].append(i)
    out = {}
    for positions in by_size.values():
        x = torch.stack([images[i] for i in positions])
        x = F.resize(x, [RESIZE], interpolation=F.InterpolationMode.BILINEAR, antialias=True)
        out.update(zip(positions, F.center_crop(x, [CROP]), strict=True))
    return out
