"""torchvision ResNet embedders: penultimate layer or global-average-pooled layer3.

torch and torchvision are imported inside functions so that the CLI starts fast.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import EmbedError, WeightsUnavailable
from ..files import sha256_file
from ..imagefile import OUT_OF_MEMORY
from ..params import FP32, EmbedOptions
from .base import Batch, SpaceInfo
from .prepare import CROP, DEVICE, HOST, RESIZE, Prepared, prepare_file, prepare_image
from .tensors import IMAGENET_MEAN, IMAGENET_STD, input_batch

# space name -> (torchvision architecture, last layer used, output dim)
RESNETS: dict[str, tuple[str, str, int]] = {
    "resnet18": ("resnet18", "avgpool", 512),
    "resnet50": ("resnet50", "avgpool", 2048),
    "resnet18-layer3": ("resnet18", "layer3", 256),
    "resnet50-layer3": ("resnet50", "layer3", 1024),
}

PREPROCESSING = (
    "RGB 8-bit (gray/palette converted, alpha over black, 16-bit / 257), resize 256 bilinear "
    "antialias, center crop 224, ImageNet mean/std normalisation"
)
RANDOM_SEED = 0


def weights_spec(weights: str | None) -> str:
    """Normalise the --weights option to the spec recorded in the store."""
    if weights is None or weights.lower() in ("imagenet", "default", "imagenet1k_v1"):
        return "torchvision:IMAGENET1K_V1"
    if weights.upper().startswith("IMAGENET1K_"):
        return f"torchvision:{weights.upper()}"
    if weights.startswith("torchvision:"):
        return weights
    if weights.lower() == "random" or weights.startswith("random:"):
        return f"random:seed={RANDOM_SEED}"
    path = weights[5:] if weights.startswith("file:") else weights
    return f"file:{os.path.abspath(path)}"


def _load_state_dict_file(path: str) -> dict[str, Any]:
    import torch

    if not os.path.isfile(path):
        raise WeightsUnavailable(
            f"weights file not found: {path}. Pass --weights PATH to a .pth file."
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsUnavailable(
            f"cannot read weights file {path}: {exc}. It must be a PyTorch state dict "
            "(torch.save(model.state_dict(), path))."
        ) from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise WeightsUnavailable(f"weights file {path} does not hold a state dict")
    # checkpoints saved from DataParallel prefix every key with "module."
    return {k.removeprefix("module."): v for k, v in obj.items()}


def build_network(arch: str, spec: str):
    """The torchvision network with its weights; raises WeightsUnavailable with a fix."""
    import torch
    import torchvision.models as tvm

    kind, _, value = spec.partition(":")
    if kind == "random":
        with torch.random.fork_rng(devices=[]):  # leave the caller's random state alone
            torch.manual_seed(RANDOM_SEED)
            return tvm.get_model(arch, weights=None), None
    net = tvm.get_model(arch, weights=None)
    if kind == "torchvision":
        enum = tvm.get_model_weights(arch)
        try:
            w = enum[value]
        except KeyError:
            raise WeightsUnavailable(
                f"{arch} has no torchvision weights {value!r}; known: {', '.join(enum.__members__)}"
            ) from None
        fname = w.url.rsplit("/", 1)[-1]
        cached = Path(torch.hub.get_dir()) / "checkpoints" / fname
        try:
            state = w.get_state_dict(progress=False, check_hash=True)
        except Exception as exc:
            raise WeightsUnavailable(
                f"cannot load the pretrained {arch} weights {value} ({exc}). They are downloaded "
                f"once from {w.url} into {cached} (set TORCH_HOME to move the cache). Offline: "
                f"copy {fname} there, or pass --weights PATH to a local state-dict file, or "
                "--weights random for an untrained network (only for tests: its similarities "
                "mean nothing)."
            ) from exc
        net.load_state_dict(state)
        return net, None
    if kind == "file":
        state = _load_state_dict_file(value)
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0:3]
            raise WeightsUnavailable(
                f"weights file {value} does not fit {arch}: {' '.join(first)}"
            ) from exc
        return net, sha256_file(value)
    raise WeightsUnavailable(f"unknown weights spec {spec!r}")


def _feature_module(net, layer: str):
    import torch
    from torch import nn

    class Trunk(nn.Module):
        """conv1 .. `layer`, then global average pooling (the fc layer is never run)."""

        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
            blocks = [net.layer1, net.layer2, net.layer3]
            if layer == "avgpool":
                blocks.append(net.layer4)
            self.blocks = nn.Sequential(*blocks)
            self.pool = nn.AdaptiveAvgPool2d(1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.flatten(self.pool(self.blocks(self.stem(x))), 1)

    return Trunk()


def make_transform():
    """torchvision's own preprocessing of a PIL image (PREPROCESSING), which vecstore no
    longer runs: the reference the host and device inputs are held to (the tests,
    bench/precision.py)."""
    from torchvision import transforms as T

    return T.Compose(
        [
            T.Resize(RESIZE, interpolation=T.InterpolationMode.BILINEAR, antialias=True),
            T.CenterCrop(CROP),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def optimize_for_cpu(model, example):
    """Trace, freeze and fold the network for CPU inference (conv+BN folding, oneDNN kernels):
    ~1.2x the eager batched throughput on a 2-core x86 machine, same vectors to 1e-6.

    torch.jit is deprecated in favour of torch.compile, whose compilation costs tens of seconds
    on a small CPU: more than it saves on a few thousand images. Any failure (or a torch
    without torch.jit) falls back to the eager model, which gives the same vectors.
    """
    import warnings

    import torch

    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, example, check_trace=False)
            return torch.jit.optimize_for_inference(torch.jit.freeze(traced))
    except Exception:
        return model


class _FileDataset:
    """Reads and prepares files in DataLoader workers (vecstore.embedders.prepare); a bad file
    becomes an error string."""

    def __init__(self, items: Sequence[tuple[int, str]], where: str) -> None:
        self.items = list(items)
        self.where = where

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, Prepared | None, str]:
        image_id, path = self.items[i]
        try:
            return image_id, prepare_file(path, self.where), ""
        except EmbedError as exc:
            err = str(exc)
        except MemoryError:  # one image too large for this machine: the others go on
            err = OUT_OF_MEMORY
        except OSError as exc:
            err = f"cannot read file: {exc.strerror or exc}"
        except Exception as exc:  # preprocessing failing on odd content must not stop the run
            err = f"cannot preprocess image: {type(exc).__name__}: {exc}"
        return image_id, None, err


def _as_list(batch: list) -> list:
    """DataLoader's collate: the items as they are (inputs of many sizes and kinds)."""
    return batch


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise WeightsUnavailable(  # not weights, but the same "cannot build the model" family
            "--device cuda was asked for but torch sees no CUDA device; use --device cpu or auto"
        )
    return device


def machine_defaults(device: str) -> tuple[int, int]:
    """(batch size, decoding workers) for a device on this machine. On the CPU the network
    is the bottleneck: one decoding worker keeps it fed, more would take its cores. A GPU
    wants large batches and every core but the one that drives it decoding."""
    if device.startswith("cuda"):
        return 256, max(1, (os.cpu_count() or 1) - 1)
    return 32, 1


class ResNetEmbedder:
    def __init__(self, name: str, options: EmbedOptions | None = None) -> None:
        import torch

        o = options or EmbedOptions()
        arch, layer, dim = RESNETS[name]
        self.spec = weights_spec(o.weights)
        net, sha = build_network(arch, self.spec)
        self.device = resolve_device(o.device)
        self.model = _feature_module(net, layer).eval().to(self.device)
        self.model = self.model.to(memory_format=torch.channels_last)
        batch_size, workers = machine_defaults(self.device)
        self.batch_size = o.batch_size or batch_size
        self.workers = o.workers if o.workers is not None else workers
        self.precision = o.precision or FP32
        on_host = o.preprocess == HOST or (o.preprocess == "auto" and self.device == "cpu")
        self.where = HOST if on_host else DEVICE  # where the input is finished
        self._batch_model = None  # the optimised network, built on the first large job
        self.info = SpaceInfo(
            name=name,
            model=arch,
            layer="penultimate (avgpool)" if layer == "avgpool" else "layer3 + global average pool",
            dim=dim,
            preprocessing=PREPROCESSING,
            weights=self.spec,
            weights_random=self.spec.startswith("random"),
            weights_sha256=sha,
            precision=self.precision,
        )

    def _forward(self, batch, model=None) -> np.ndarray:
        """float32 vectors of a normalised batch, the network run in ``self.precision``."""
        import torch

        with torch.inference_mode(), self._autocast():
            x = batch.to(self.device, non_blocking=True).contiguous(
                memory_format=torch.channels_last
            )
            return (model or self.model)(x).float().cpu().numpy()

    def _autocast(self):
        """torch.autocast to bfloat16 or float16 on this device; fp32: nothing changes."""
        import contextlib

        import torch

        if self.precision == FP32:
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.split(":")[0], dtype=dtype)

    def embed_image(self, img: Image.Image) -> np.ndarray:
        x, kept, failed = self._inputs([prepare_image(img, self.where)])
        if failed:
            raise EmbedError(failed[0][1])
        return self._forward(x)[0]

    def _model_for(self, n_items: int):
        """The network for a job: traced and frozen on the CPU when the job is big enough
        to repay the ~1 s it takes, the eager one otherwise."""
        import torch

        if self.device != "cpu" or self.precision != FP32 or n_items < 2 * self.batch_size:
            return self.model  # the traced, frozen model is fp32: autocast runs the eager one
        if self._batch_model is None:
            example = torch.zeros(2, 3, 224, 224).contiguous(memory_format=torch.channels_last)
            self._batch_model = optimize_for_cpu(self.model, example)
        return self._batch_model

    def _inputs(self, prepared: Sequence[Prepared]):
        import torch

        with torch.inference_mode():
            return input_batch(prepared, self.device)

    def embed_prepared(
        self, items: Sequence[tuple[int, Prepared]], total: int = 0
    ) -> Iterator[Batch]:
        """Embed inputs prepared where the files were decoded (the scan's single decode),
        batch by batch; ``total``: the size of the whole job (which model pays off)."""
        model = self._model_for(max(total, len(items)))
        for start in range(0, len(items), self.batch_size):
            part = items[start : start + self.batch_size]
            yield self._batch([i for i, _ in part], [p for _, p in part], model)

    def _batch(self, ids: list[int], prepared: Sequence[Prepared], model) -> Batch:
        x, kept, failed = self._inputs(prepared)
        vecs = self._forward(x, model) if kept else np.zeros((0, self.info.dim), np.float32)
        return [ids[j] for j in kept], vecs, [(ids[j], e) for j, e in failed]

    def embed_files(self, items: Sequence[tuple[int, str]]) -> Iterator[Batch]:
        from torch.utils.data import DataLoader

        loader = DataLoader(
            _FileDataset(items, self.where),
            batch_size=self.batch_size,
            num_workers=self.workers if len(items) > self.batch_size else 0,
            collate_fn=_as_list,
        )
        model = self._model_for(len(items))
        for batch in loader:
            unread = [(iid, err) for iid, p, err in batch if p is None]
            ready = [(iid, p) for iid, p, _ in batch if p is not None]
            ids, vecs, failed = self._batch([i for i, _ in ready], [p for _, p in ready], model)
            yield ids, vecs, unread + failed
