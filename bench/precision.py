"""ResNet vectors in bf16 and fp16 against fp32: cosine per image and throughput.

The same images, the same network (random weights, seed 0), one embedder per
precision (``--precision`` of `vecstore ingest` / `embed`), the images through vecstore's own
preprocessing. The baseline is fp32 in the same run; the target (issue: bf16 vectors within
cosine 0.999 of fp32) is checked per image. Random weights: the directions of the vectors
compared are those of an untrained network, recorded as such.

    .venv/bin/python bench/precision.py --device cpu --record
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from benchutil import machine_line, markdown_table, record

from vecstore.demo import digit_images
from vecstore.embedders import get_embedder
from vecstore.embedders.resnet import make_transform

TARGET = 0.999  # bf16 (and fp16) vectors within this cosine of fp32, per image


def images(n: int):
    """``n`` digits, upscaled to 256x256 RGB, preprocessed as vecstore does."""
    import torch
    from PIL import Image

    imgs, _ = digit_images(scale=2)
    tf = make_transform()
    return torch.stack(
        [tf(Image.fromarray(imgs[i]).convert("RGB").resize((256, 256))) for i in range(n)]
    )


def run(precision: str, x, device: str, batch: int) -> tuple[np.ndarray, float]:
    """(vectors, images/s) of one precision; the first batch warms up, untimed."""
    emb = get_embedder("resnet18", weights="random", device=device, precision=precision)
    emb._forward(x[:batch])
    t0 = time.perf_counter()
    out = np.concatenate([emb._forward(x[i : i + batch]) for i in range(0, len(x), batch)])
    return out, len(x) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("-n", type=int, default=256, help="images")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    x = images(args.n)
    ref, ref_rate = run("fp32", x, args.device, args.batch)
    rows = [["fp32", f"{ref_rate:.1f}", "1.00x", "", "", "baseline", ""]]
    for precision in ("bf16", "fp16"):
        v, rate = run(precision, x, args.device, args.batch)
        cos = (v * ref).sum(1) / np.linalg.norm(v, axis=1) / np.linalg.norm(ref, axis=1)
        ok = "PASS" if cos.min() >= TARGET else "FAIL"
        rows.append(
            [
                precision,
                f"{rate:.1f}",
                f"{rate / ref_rate:.2f}x",
                f"{cos.min():.6f}",
                f"{cos.mean():.6f}",
                f"cos min >= {TARGET}",
                ok,
            ]  # fmt: skip
        )
    header = ["precision", "img/s", "vs fp32", "cos min", "cos mean", "target", "result"]
    table = markdown_table(header, rows, [":--", "--:", "--:", "--:", "--:", ":--", ":--"])
    print(table)
    if args.record:
        import torch

        notes = [
            machine_line(load),
            f"torch {torch.__version__}, torch.get_num_threads() = {torch.get_num_threads()}; "
            f"device {args.device}",
            f"ResNet18 (penultimate layer), random weights (seed 0); {args.n} digits upscaled "
            f"to 256x256, vecstore's preprocessing; batches of {args.batch}; the network "
            "alone (no decoding), after one untimed batch; 16-bit: torch.autocast",
        ]
        cmd = f"python bench/precision.py --device {args.device} -n {args.n} --record"
        record("precision", notes, cmd, table)


if __name__ == "__main__":
    main()
