"""Ingest benchmark: vecstore against the usual notebook loop (ResNet18), and HOG ingest.

What it measures, end to end (image files in, vectors out):

1. ResNet18 (``--arch``) on ``--n`` gray 512x512 PNGs (``--format``; scikit-learn digits
   scaled up 64x, marked copies past 1,797), twice from the same random weights file
   (ImageNet weights need a download): ``Store.ingest`` into a fresh store, and the notebook
   loop (PIL, torchvision transforms, one ``model(x)`` per file). The vectors of both are
   compared image by image (cosine similarity).
2. HOG ingest of the 1,797 digits written by ``vecstore.demo.write_digits``.

Each method runs in its own process (this script with ``--worker``), so its peak RSS is its
own. A process imports everything first and then times from opening the store / loading the
weights until the last vector is stored (vecstore) or produced (loop): Python import time is
not counted. Both ResNet methods run on the CPU with the same torch thread count (torch's
default, set explicitly in each process). The exit status is 0 even when a target fails.

Run it on a quiet machine, from the repository root::

    .venv/bin/python bench/ingest.py --record          # full size, appended to BENCHMARKS.md
    .venv/bin/python bench/ingest.py --repeat 5        # best and median of 5 runs
    .venv/bin/python bench/ingest.py --quick           # smoke test: 32 + 256 images

On a GPU machine, the targets of the GPU ingest (ResNet18 JPEG and PNG, ResNet50 JPEG)::

    python bench/ingest.py --device cuda --n 4096 --format jpeg --record
    python bench/ingest.py --device cuda --n 4096 --format png --record
    python bench/ingest.py --device cuda --n 4096 --format jpeg --arch resnet50 --record
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from benchutil import BENCHMARKS_MD, machine_line, out_folder, record

RESNET_SCALE = 64  # 8x8 digits -> 512x512 pixels
QUICK_N = 32
QUICK_HOG_N = 256
FULL_N = 256
FORMATS = {"png": "png", "jpeg": "jpg"}  # --format -> file suffix
ARCHS = ("resnet18", "resnet50")
# the GPU ingest's targets (one H100-class GPU, 16 cores), end to end: (arch, format) -> img/s
GPU_TARGETS = {
    ("resnet18", "jpeg"): 5000.0,
    ("resnet18", "png"): 1600.0,
    ("resnet50", "jpeg"): 4000.0,
}
TARGET_RATIO = 1.4
TARGET_COSINE = 0.9999
TARGET_HOG_PER_S = 1000.0
METHODS = ("loop", "vecstore", "hog")
SWEEP_BATCHES = (16, 32, 64, 128)
SWEEP_WORKERS = (0, 1, 2)
OUT_FOLDERS = ("resnet", "hog", "weights", "stores", "results")  # what a run writes in --out

# Modules each worker imports before its clock starts (vecstore imports some of them lazily).
PRELOAD: dict[str, tuple[str, ...]] = {
    "loop": ("torch", "torchvision.models", "torchvision.transforms", "PIL.Image"),
    "vecstore": (
        "vecstore.store",
        "vecstore.embedders.resnet",
        "alembic.command",
        "alembic.script",
        "tqdm",
        "torch",
        "torch.utils.data",
        "torchvision.models",
        "torchvision.transforms",
    ),
    "hog": ("vecstore.store", "alembic.command", "alembic.script", "tqdm", "skimage.feature"),
}


@dataclass
class RunResult:
    """What one worker process reports (its JSON result file)."""

    seconds: float
    images: int
    images_per_s: float
    peak_rss_mib: float
    vectors_npy: str | None = None  # loop only: its vectors, one row per entry of `paths`
    paths: list[str] | None = None


# --------------------------------------------------------------------------------------------
# workers: one method, timed, in a process of its own
# --------------------------------------------------------------------------------------------


def _png_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.png"))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in (".png", ".jpg"))


def _loop(
    images: Path, weights: Path, device: str, arch: str = "resnet18"
) -> tuple[int, list[str], np.ndarray]:
    """The usual notebook loop; returns (images, paths, vectors). Its caller times it."""
    import torch
    import torchvision
    from PIL import Image
    from torch import nn
    from torchvision import transforms

    paths = _image_files(images)
    sd = torch.load(weights, map_location="cpu")
    model = getattr(torchvision.models, arch)()
    model.load_state_dict(sd)
    model.fc = nn.Identity()
    model.eval().to(device)
    transform = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ]
    )
    vectors = []
    for p in paths:
        x = transform(Image.open(p).convert("RGB"))
        with torch.no_grad():
            vectors.append(model(x.unsqueeze(0).to(device))[0].cpu().numpy())
    return len(paths), [str(p) for p in paths], np.stack(vectors)


def _vecstore_ingest(
    images: Path,
    store_path: Path,
    space: str,
    weights: Path | None,
    batch_size: int | None,
    workers: int | None,
    device: str = "cpu",
) -> int:
    """A fresh store, one ingest; returns the number of files. Its caller times it."""
    from vecstore.params import EmbedOptions
    from vecstore.store import Store

    opts = EmbedOptions(
        weights=str(weights) if weights else None,
        device=device,
        batch_size=batch_size,
        workers=workers,
    )
    with Store.open(store_path, create=True) as store:
        report = store.ingest(images, [space], embedding=opts)
    embedded = sum(s.embedded for s in report.embedded)
    if report.failed or embedded != report.scanned:
        raise SystemExit(
            f"vecstore ingest embedded {embedded} of {report.scanned} files; "
            f"failed: {report.failed[:3]}"
        )
    return report.scanned


def peak_rss_mib() -> float:
    """This process's peak resident set size (VmHWM). Not ru_maxrss: Linux carries the
    high-water mark of the process that started this one across exec, so every worker would
    report at least the parent's peak."""
    with open("/proc/self/status") as f:
        kib = next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:"))
    return kib / 1024


def run_worker(args: argparse.Namespace) -> None:
    """``--worker METHOD``: import, then time one method and write its RunResult as JSON."""
    for name in PRELOAD[args.worker]:
        importlib.import_module(name)
    if args.worker != "hog":
        import torch

        torch.set_num_threads(args.threads)
    vectors_npy, paths = None, None
    t0 = time.perf_counter()
    if args.worker == "loop":
        images, paths, vectors = _loop(args.images, args.weights, args.device, args.arch)
        seconds = time.perf_counter() - t0
        vectors_npy = str(args.result.with_suffix(".npy"))
        np.save(vectors_npy, vectors)
    else:
        resnet = args.worker == "vecstore"
        images = _vecstore_ingest(
            args.images,
            args.store,
            args.arch if resnet else "hog",
            args.weights if resnet else None,
            args.batch_size,
            args.workers,
            args.device,
        )
        seconds = time.perf_counter() - t0
    result = RunResult(
        seconds=seconds,
        images=images,
        images_per_s=images / seconds,
        peak_rss_mib=peak_rss_mib(),
        vectors_npy=vectors_npy,
        paths=paths,
    )
    args.result.write_text(json.dumps(asdict(result)))


# --------------------------------------------------------------------------------------------
# the parent: data, runs, comparison, report
# --------------------------------------------------------------------------------------------


def write_resnet_images(folder: Path, n: int, fmt: str = "png") -> None:
    """``n`` digits at 512x512 pixels as gray (mode L) PNGs or JPEGs (quality 90). Past the
    1,797 digits they come round again, each round marked in its top-left pixels so that
    every file is another image (vecstore would store a copy once)."""
    from PIL import Image

    from vecstore.demo import digit_images

    digits = digit_images(scale=RESNET_SCALE)[0]
    folder.mkdir(parents=True)
    for i in range(n):
        img = digits[i % len(digits)].copy()
        turn = i // len(digits)
        if turn:
            img[:8, :8] = 255 - turn % 256  # an 8x8 block: survives JPEG's rounding
            img[8:16, :8] = turn // 256
        name = folder / f"digit_{i:05d}.{FORMATS[fmt]}"
        Image.fromarray(img, "L").save(name, **({"quality": 90} if fmt == "jpeg" else {}))


def write_hog_digits(out: Path, limit: int | None) -> Path:
    """All digits via vecstore.demo.write_digits (only the first ``limit`` kept); their folder."""
    from vecstore.demo import write_digits

    write_digits(out)
    folder = out / "digits"
    if limit is not None:
        for p in _png_files(folder)[limit:]:
            p.unlink()
    return folder


def write_random_weights(path: Path, arch: str = "resnet18") -> None:
    import torch
    import torchvision

    torch.manual_seed(0)
    torch.save(getattr(torchvision.models, arch)(weights=None).state_dict(), path)


def run_method(
    method: str,
    run: int,
    out: Path,
    data: dict[str, Path],
    threads: int,
    batch_size: int | None,
    workers: int | None,
    device: str = "cpu",
    tag: str = "",
    arch: str = "resnet18",
) -> RunResult:
    result = out / "results" / f"{method}{tag}-{run}.json"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        method,
        "--images",
        str(data[method]),
        "--weights",
        str(data["weights"]),
        "--store",
        str(out / "stores" / f"{method}{tag}-{run}"),
        "--result",
        str(result),
        "--threads",
        str(threads),
        "--device",
        device,
        "--arch",
        arch,
    ]
    if batch_size is not None:
        cmd += ["--batch-size", str(batch_size)]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise SystemExit(f"the {method} run failed (exit {proc.returncode}); see its output above")
    return RunResult(**json.loads(result.read_text()))


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def cosines(
    store_path: Path, loop: RunResult, space: str = "resnet18"
) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the cosine similarity of vecstore's stored vector and the loop's: as they
    are, and centered (both minus the loop's mean vector over the images)."""
    from vecstore.store import Store

    assert loop.paths is not None and loop.vectors_npy is not None
    reference = np.load(loop.vectors_npy).astype(np.float64)
    stored = []
    with Store.open(store_path) as store:
        space = store.get_space(space)
        for path in loop.paths:
            image = store.image_by_path(path)
            if image is None:
                raise SystemExit(f"vecstore has no image for {path}")
            _, vecs = store.vectors(space, [image.id])
            if len(vecs) != 1:
                raise SystemExit(f"vecstore has no {space.name} vector for {path}")
            stored.append(vecs[0])
    ours = np.stack(stored).astype(np.float64)
    mean = reference.mean(axis=0)
    return _row_cosines(ours, reference), _row_cosines(ours - mean, reference - mean)


def machine_lines(threads: int, load: float) -> list[str]:
    import torch

    return [
        machine_line(load),
        f"torch {torch.__version__}, torch.get_num_threads() = {threads} (torch's default, "
        f"set explicitly in both ResNet processes); Python {platform.python_version()}",
    ]


HEADERS = [
    "method",
    "images",
    "s best",
    "s median",
    "img/s best",
    "img/s median",
    "peak RSS MiB",
    "vs loop",
    "cos min",
    "cos mean",
    "centered cos min",
    "target",
    "result",
]


def table_rows(
    results: dict[str, list[RunResult]],
    cos: np.ndarray,
    centered: np.ndarray,
    arch: str = "resnet18",
    gpu_target: float | None = None,
) -> list[list[str]]:
    """The table: the loop, vecstore (against the loop, or with ``gpu_target`` against that
    rate in img/s), HOG."""

    def timing(method: str) -> tuple[list[str], float]:
        runs = results[method]
        median = statistics.median(r.images_per_s for r in runs)
        return [
            str(runs[0].images),
            f"{min(r.seconds for r in runs):.2f}",
            f"{statistics.median(r.seconds for r in runs):.2f}",
            f"{max(r.images_per_s for r in runs):.1f}",
            f"{median:.1f}",
            f"{max(r.peak_rss_mib for r in runs):.0f}",
        ], median

    loop_cells, loop_median = timing("loop")
    vec_cells, vec_median = timing("vecstore")
    hog_cells, hog_median = timing("hog")
    ratio = vec_median / loop_median
    cos_min, cos_mean = float(cos.min()), float(cos.mean())
    fast = vec_median >= gpu_target if gpu_target else ratio >= TARGET_RATIO
    misses = [
        name for name, ok in (("speed", fast), ("cosine", cos_min >= TARGET_COSINE)) if not ok
    ]
    speed = f">= {gpu_target:.0f} img/s" if gpu_target else f">= {TARGET_RATIO}x loop"
    return [
        [f"notebook loop, {arch}", *loop_cells, "1.00x", "", "", "", "baseline", ""],
        [
            f"vecstore ingest, {arch}",
            *vec_cells,
            f"{ratio:.2f}x",
            f"{cos_min:.6f}",
            f"{cos_mean:.6f}",
            f"{centered.min():.6f}",
            f"{speed}, cos min >= {TARGET_COSINE}",
            "FAIL (" + ", ".join(misses) + ")" if misses else "PASS",
        ],
        [
            "vecstore ingest, hog",
            *hog_cells,
            "",
            "",
            "",
            "",
            f">= {TARGET_HOG_PER_S:.0f} img/s",
            "PASS" if hog_median >= TARGET_HOG_PER_S else "FAIL",
        ],
    ]


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [HEADERS, *rows]) for i in range(len(HEADERS))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 or i >= len(HEADERS) - 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    return "\n".join([line(HEADERS), line(["-" * w for w in widths]), *map(line, rows)])


def markdown_table(rows: list[list[str]]) -> str:
    aligns = [":--" if i == 0 or i >= len(HEADERS) - 2 else "--:" for i in range(len(HEADERS))]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [HEADERS, aligns, *rows])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Ingest benchmark: vecstore vs the notebook loop (ResNet18), and HOG ingest.",
    )
    p.add_argument(
        "--n",
        type=int,
        help=f"images for the ResNet part (default {FULL_N}; {QUICK_N} with --quick)",
    )
    p.add_argument(
        "--format",
        choices=sorted(FORMATS),
        default="png",
        help="the ResNet images' file format (default png; the sweep writes PNGs)",
    )
    p.add_argument(
        "--arch",
        choices=ARCHS,
        default="resnet18",
        help="the network of both ResNet methods (default resnet18; the sweep runs resnet18)",
    )
    p.add_argument("--batch-size", type=int, help="vecstore's batch size (default: vecstore's)")
    p.add_argument("--workers", type=int, help="vecstore's workers (default: vecstore's)")
    p.add_argument("--repeat", type=int, default=1, help="runs of each method (default 1)")
    p.add_argument(
        "--device", default="cpu", help="where both ResNet methods run: cpu (default) or cuda"
    )
    p.add_argument(
        "--sweep",
        action="store_true",
        help="instead: vecstore's defaults against every hand setting of --batch-size x "
        "--workers in --sweep-batches x --sweep-workers (the defaults must be at least as fast)",
    )
    p.add_argument(
        "--sweep-batches",
        type=_ints,
        default=SWEEP_BATCHES,
        help=f"batch sizes the sweep tries, comma-separated (default {_csv(SWEEP_BATCHES)})",
    )
    p.add_argument(
        "--sweep-workers",
        type=_ints,
        default=SWEEP_WORKERS,
        help=f"worker counts the sweep tries, comma-separated (default {_csv(SWEEP_WORKERS)})",
    )
    p.add_argument(
        "--record", action="store_true", help=f"append the results to {BENCHMARKS_MD.name}"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke test, not a measurement: "
        f"{QUICK_N} ResNet images, HOG on the first {QUICK_HOG_N} digits",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="folder for the images, weights and stores (kept; "
        "what a previous run left there is replaced); default a temporary folder, "
        "removed at the end",
    )
    hidden = argparse.SUPPRESS  # the parent's options to its worker processes
    p.add_argument("--worker", choices=METHODS, help=hidden)
    p.add_argument("--images", type=Path, help=hidden)
    p.add_argument("--weights", type=Path, help=hidden)
    p.add_argument("--store", type=Path, help=hidden)
    p.add_argument("--result", type=Path, help=hidden)
    p.add_argument("--threads", type=int, help=hidden)
    args = p.parse_args(argv)
    if args.n is not None and args.n < 2:
        p.error("--n must be at least 2 (the centered cosine needs a mean over images)")
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    if args.record and args.quick:
        p.error("--quick runs are smoke tests; they are not recorded")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        run_worker(args)
        return 0
    import torch

    if args.sweep:
        return sweep(args)
    threads = torch.get_num_threads()
    load = os.getloadavg()[0]
    on_gpu = args.device.startswith("cuda")
    n = args.n if args.n is not None else (QUICK_N if args.quick else FULL_N)
    command = shlex.join(["python", "bench/ingest.py", *sys.argv[1:]])
    with contextlib.ExitStack() as stack:
        out = out_folder(stack, args.out, "vecstore-bench-", OUT_FOLDERS)
        for sub in ("weights", "results"):
            (out / sub).mkdir(parents=True)
        print(f"writing {n} ResNet images and the HOG digits under {out}", file=sys.stderr)
        write_resnet_images(out / "resnet", n, args.format)
        data = {
            "loop": out / "resnet",
            "vecstore": out / "resnet",
            "hog": write_hog_digits(out / "hog", QUICK_HOG_N if args.quick else None),
            "weights": out / "weights" / f"{args.arch}-random.pth",
        }
        write_random_weights(data["weights"], args.arch)
        results: dict[str, list[RunResult]] = {m: [] for m in METHODS}
        cos: list[np.ndarray] = []
        centered: list[np.ndarray] = []
        for run in range(1, args.repeat + 1):
            for method in METHODS:
                print(f"run {run}/{args.repeat}: {method}", file=sys.stderr)
                results[method].append(
                    run_method(
                        method,
                        run,
                        out,
                        data,
                        threads,
                        args.batch_size,
                        args.workers,
                        args.device,
                        arch=args.arch,
                    )  # fmt: skip
                )
            store = out / "stores" / f"vecstore-{run}"
            raw, cent = cosines(store, results["loop"][-1], args.arch)
            cos.append(raw)
            centered.append(cent)
        gpu_target = GPU_TARGETS.get((args.arch, args.format)) if on_gpu else None
        rows = table_rows(
            results, np.concatenate(cos), np.concatenate(centered), args.arch, gpu_target
        )

    notes = [
        *machine_lines(threads, load),
        f"{args.arch}: {n} gray 512x512 {args.format.upper()}s (digits x{RESNET_SCALE}, marked "
        "copies past 1,797), random weights (seed 0), the "
        f"same file for both, device {args.device}; vecstore batch_size={args.batch_size}, "
        f"workers={args.workers} (None: vecstore's defaults). HOG: "
        f"{QUICK_HOG_N if args.quick else 'all'} digits from vecstore.demo.write_digits.",
        f"{args.repeat} run(s) per method, each in its own process. Times exclude Python imports: "
        "from opening a fresh store (vecstore) or loading the weights (loop) until the last "
        "vector is stored or produced. vs loop and PASS/FAIL use the median img/s.",
        "centered cos: both vectors minus the loop's mean vector, for information (not a "
        "target): random weights make the vectors of all images nearly parallel, so the raw "
        "cosine hardly sees a preprocessing difference.",
        "peak RSS: the highest of the runs, of the method's own process (VmHWM); the worker "
        "processes vecstore starts (DataLoader, scan pool) are not counted.",
    ]
    report = text_table(rows)
    if args.quick:
        print("QUICK smoke test: too small to be a measurement")
    print("\n".join(notes), report, sep="\n\n")
    if args.record:
        path = record("ingest", notes, command, markdown_table(rows))
        print(f"\nrecorded in {path}")
    return 0


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def _csv(values: tuple[int, ...]) -> str:
    return ",".join(map(str, values))


def sweep(args: argparse.Namespace) -> int:
    """vecstore's ingest with its defaults and with each hand setting, in rounds (every
    setting once per round, after an untimed warm-up run), median img/s of each. The order
    turns from round to round: a run's place in its round mattered more than its setting
    when the defaults always ran first."""
    import torch

    threads, load = torch.get_num_threads(), os.getloadavg()[0]
    n = args.n if args.n is not None else (QUICK_N if args.quick else FULL_N)
    settings = [(None, None)] + [(b, w) for b in args.sweep_batches for w in args.sweep_workers]
    with contextlib.ExitStack() as stack:
        out = out_folder(stack, args.out, "vecstore-sweep-", OUT_FOLDERS)
        for sub in ("weights", "results"):
            (out / sub).mkdir(parents=True)
        write_resnet_images(out / "resnet", n)
        data = {"vecstore": out / "resnet", "weights": out / "weights" / "resnet18-random.pth"}
        write_random_weights(data["weights"])
        # one untimed run first (page cache, first process): it used to fall on the defaults
        run_method("vecstore", 0, out, data, threads, None, None, args.device, "-warm")
        runs: dict[tuple, list[float]] = {k: [] for k in settings}
        for r in range(1, args.repeat + 1):  # rounds: every setting once per round
            turn = (r - 1) % len(settings)  # each round starts one setting later: no setting
            for b, w in settings[turn:] + settings[:turn]:  # always runs first in its round
                res = run_method(
                    "vecstore", r, out, data, threads, b, w, args.device, f"-b{b}-w{w}"
                )
                runs[(b, w)].append(res.images_per_s)
                print(f"round {r}: batch {b or 'default'}, workers "
                      f"{w if w is not None else 'default'}: {res.images_per_s:.1f} img/s",
                      file=sys.stderr)  # fmt: skip
    table, verdict = sweep_summary(runs, args.device)
    notes = [
        machine_line(load),
        f"vecstore ingest, resnet18, {n} gray 512x512 PNGs, random weights, device "
        f"{args.device}, torch threads {threads}; {args.repeat} round(s), every setting once per "
        "round in its own process (each round starting one setting later), after one untimed "
        "warm-up run; median img/s of the rounds; imports not timed.",
        verdict,
    ]
    print("\n".join(notes), table, sep="\n\n")
    if args.record:
        command = shlex.join(["python", "bench/ingest.py", *sys.argv[1:]])
        print(f"\nrecorded in {record('ingest defaults', notes, command, table)}")
    return 0


def sweep_summary(runs: dict[tuple, list[float]], device: str) -> tuple[str, str]:
    """The sweep's table (per setting: median img/s and range) and its verdict (the defaults'
    median against the best setting's; target >= 0.95x). The hand setting the defaults
    resolve to is marked: its runs and the defaults' are the same configuration, so the gap
    between the two is the noise of the machine."""
    from vecstore.embedders.resnet import machine_defaults

    same = machine_defaults(device)
    rate = {k: statistics.median(v) for k, v in runs.items()}
    best = max((k for k in runs if k != (None, None)), key=rate.get)
    rows = []
    for k in sorted(runs, key=lambda k: -rate[k]):
        b, w = k
        mark = " (= defaults)" if k == same else ""
        rows.append(
            ["default" if b is None else f"{b}", ("default" if w is None else f"{w}") + mark,
             f"{rate[k]:.1f}", f"{min(runs[k]):.1f}-{max(runs[k]):.1f}"]
        )  # fmt: skip
    head = ["batch size", "workers", "img/s (median)", "img/s (range)"]
    table = "\n".join(
        "| " + " | ".join(c) + " |" for c in [head, [":--", ":--", "--:", ":--"], *rows]
    )
    mine = rate[(None, None)] / rate[best]
    verdict = (
        f"defaults = batch {same[0]}, workers {same[1]} on {device}: {rate[(None, None)]:.1f} "
        f"img/s; best hand setting: batch {best[0]}, workers {best[1]}, {rate[best]:.1f}: "
        f"defaults at {mine:.2f}x the best hand setting (target >= 0.95x): "
        f"{'PASS' if mine >= 0.95 else 'FAIL'}"
    )
    return table, verdict


if __name__ == "__main__":
    sys.exit(main())
