"""Report benchmark: `vecstore report` on 10,000 images, time and file size, plus the
screenshot shown in the README.

The images are scikit-learn's digits, each written 5 or 6 times with a different random
one-pixel-wide jitter and noise so that every file is distinct (10,000 PNGs of 32x32), 2 per
digit in labeled/<digit>/. The store gets the pixels and hog spaces, a clustering of each, a
propagation and an evaluation against the true digits, so every part of the page has data.
Only the `report` step is timed (in-process, imports done). Targets: <= 60 s, < 30 MB.

    .venv/bin/python bench/report.py --record     # also writes bench/report.png
"""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchutil import machine_line, markdown_table, record
from PIL import Image

N = 10_000
TARGET_SECONDS = 60.0
TARGET_BYTES = 30 * 2**20
SCREENSHOT = Path(__file__).with_name("report.png")


def write_images(root: Path, n: int, seed: int = 0) -> Path:
    from vecstore.demo import digit_images

    imgs, y = digit_images(scale=4)
    rng = np.random.default_rng(seed)
    seen: dict[int, int] = {}
    rows = []
    for i in range(n):
        j = i % len(imgs)
        img = np.roll(imgs[j], tuple(rng.integers(-1, 2, size=2)), axis=(0, 1)).astype(np.int16)
        img = np.clip(img + rng.integers(-12, 13, size=img.shape), 0, 255).astype(np.uint8)
        d = int(y[j])
        seen[d] = seen.get(d, 0) + 1
        p = root / (f"labeled/{d}" if seen[d] <= 2 else "unlabeled") / f"img_{i:05d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, "L").save(p)
        rows.append((str(p), d))
    truth = root.parent / "truth.csv"
    with open(truth, "w", newline="") as f:
        csv.writer(f).writerows([("path", "label"), *rows])
    return truth


def screenshot(html: Path, png: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--use-gl=swiftshader",
                "--enable-unsafe-swiftshader",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        page = browser.new_page(viewport={"width": 1300, "height": 1500})
        page.goto(html.resolve().as_uri())
        page.wait_for_function("window.vecstoreReportReady === true", timeout=120000)
        page.select_option("#cluster", "3")
        page.wait_for_timeout(1500)
        page.screenshot(path=str(png))
        browser.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=N)
    ap.add_argument(
        "--record", action="store_true", help="append to BENCHMARKS.md and write bench/report.png"
    )
    args = ap.parse_args()
    from vecstore.params import ClusterParams
    from vecstore.store import Store

    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="vecstore-report-") as tmp:
        root = Path(tmp) / "images"
        print(f"writing {args.n} images", file=sys.stderr)
        truth_csv = write_images(root, args.n)
        with Store.open(Path(tmp) / "store", create=True) as store:
            print("ingest, cluster, propagate, evaluate", file=sys.stderr)
            store.ingest(root, ["pixels", "hog"], labels_from_folders=True)
            truth = store.read_truth(truth_csv)
            for space in ("hog", "pixels"):
                store.cluster(space, ClusterParams(k=10, method="spectral"), truth=truth)
            store.propagate("pixels")
            store.evaluate("pixels", truth=truth)
            print("report", file=sys.stderr)
            t0 = time.perf_counter()
            r = store.report(Path(tmp) / "report.html", space="pixels")
            seconds = time.perf_counter() - t0
        size = r.bytes
        if args.record:
            screenshot(Path(r.path), SCREENSHOT)
    ok_t, ok_s = seconds <= TARGET_SECONDS, size < TARGET_BYTES
    rows = [
        ("images in the store", f"{r.images}", "", ""),
        ("points on the map", f"{r.points}", "", ""),
        (
            "report time (s)",
            f"{seconds:.1f}",
            f"<= {TARGET_SECONDS:.0f}",
            "PASS" if ok_t else "FAIL",
        ),
        ("report size (MiB)", f"{size / 2**20:.1f}", "< 30", "PASS" if ok_s else "FAIL"),
    ]
    command = shlex.join(["python", "bench/report.py", *sys.argv[1:]])
    lines = [machine_line(load), f"command: `{command}`"]
    table = "\n".join(f"{a:<22} {b:>8}  {c:<8} {d}" for a, b, c, d in rows)
    print("\n".join(lines), table, sep="\n\n")
    if args.record:
        path = record(
            "report",
            [lines[0], "screenshot: bench/report.png"],
            command,
            markdown_table(
                ["measure", "value", "target", "result"],
                [list(r) for r in rows],
                [":--", "--:", ":--", ":--"],
            ),
        )
        print(f"recorded in {path} and {SCREENSHOT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
