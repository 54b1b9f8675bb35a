"""Review flag and labeling methods benchmark (issue 13, items 3 and 5).

Does the calibrated review flag leave unflagged pseudo-labels >= 97 % right without flagging
nearly everything on a binary task, and which labeling method does best out-of-fold?

1. Binary case (as bench/recall_promise.py builds it: the first 1,500 digits, "cancer" = 3, 5,
   8, about 30 %), 100 stratified expert labels, ``--draws`` draws, spaces pixels and hog,
   for each method of ``--methods``: ``Store.propagate(space, PropagationParams(method=...))``,
   ``Store.evaluate(space, EvaluationParams(positive="cancer"))`` (out-of-fold, which
   calibrates the flag and makes the recall promise), ``Store.export_table``; scored on the
   unlabeled images against the truth: accuracy of the export's labels, share flagged
   needs_review, true accuracy of the unflagged ones, and the evaluation's expected accuracy.
2. Digits (1,797, ten classes), 2 expert labels per digit, the same per draw on pixels with
   the default method.
3. ``Store.compare_methods`` on draw 0 of the binary case, each space: the README's table.

The exit status is 0 whatever the results. Run it from the repository root::

    .venv/bin/python bench/review_flag.py                 # 10 draws
    .venv/bin/python bench/review_flag.py --draws 3 --methods propagation
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from benchutil import machine_lines, markdown_table, out_folder
from recall_promise import N_IMAGES, POSITIVE, draw, write_images, write_label_csv

from vecstore.params import METHOD_METRICS

SPACES = ("pixels", "hog")
METHODS = ("propagation", "propagation-unbalanced", "auto")
TARGET = 0.97
MAX_FLAGGED = 0.35


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Flagged:
    accuracy: float  # of the export's pseudo-labels
    flagged: float  # share needs_review
    unflagged_accuracy: float
    expected: float | None  # the evaluation's expected accuracy of the unflagged
    method: str  # the method used (auto: the one it chose)


def score_export(df, truth: dict[int, str], expected: float | None, method: str) -> Flagged:
    rest = df[df["source"] == "propagated"]
    ok = (rest["label"] == rest["image_id"].map(truth)).to_numpy()
    flag = rest["needs_review"].to_numpy(dtype=bool)
    return Flagged(
        float(ok.mean()),
        float(flag.mean()),
        float(ok[~flag].mean()) if (~flag).any() else float("nan"),
        expected,
        method,
    )


def labeled_store(template: Path, work: Path, rows, paths, is_pos):
    """A fresh copy of the template store under ``work`` with the binary labels of ``rows``
    imported, open for writing."""
    from vecstore.store import Store

    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(template, work / "store")
    write_label_csv(work / "labels.csv", [paths[r] for r in rows], is_pos[rows])
    store = Store.open(work / "store", write=True)
    store.import_labels(work / "labels.csv", new_class=True)
    return store


def binary_draw(
    template: Path, work: Path, space: str, method: str, rows, paths, is_pos, truth_csv
):
    from vecstore.params import EvaluationParams, ExportOptions, PropagationParams

    with labeled_store(template, work, rows, paths, is_pos) as store:
        prop = store.propagate(space, PropagationParams(method=method))
        ev = store.evaluate(space, EvaluationParams(positive=POSITIVE))
        df = store.export_table(ExportOptions(space=space))
        truth = store.read_truth(truth_csv)
    return score_export(df, truth, ev.review.expected_accuracy, prop.method)


def digits_draws(out: Path, draws: int) -> list[Flagged]:
    """All 1,797 digits (ten classes) on pixels, 2 labels per digit, the default method,
    evaluate (2 folds: one label per digit to fit on) then export."""
    from PIL import Image

    from vecstore.demo import digit_images
    from vecstore.params import EvaluationParams, ExportOptions
    from vecstore.store import Store

    imgs, digits = digit_images()
    folder = out / "digits10"
    folder.mkdir()
    for i, img in enumerate(imgs):
        Image.fromarray(img, "L").save(folder / f"d_{i:04d}.png")
    template = out / "digits10-store"
    with Store.open(template, write=True, create=True) as store:
        store.ingest(folder, spaces=["pixels"])
        truth = {
            int(store.image_by_path(str((folder / f"d_{i:04d}.png").resolve())).id): str(d)
            for i, d in enumerate(digits)
        }
    ids = np.array(sorted(truth))
    y = np.array([truth[i] for i in ids])
    results = []
    for seed in range(draws):
        log(f"digits: draw {seed}")
        rng = np.random.default_rng(seed)
        labeled = np.concatenate(
            [rng.permutation(np.flatnonzero(y == c))[:2] for c in sorted(set(y))]
        )
        work = out / "digits10-work"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(template, work)
        with Store.open(work, write=True) as store:
            for r in labeled:
                store.set_label(str(int(ids[r])), y[r], new_class=True, chosen="import")
            store.propagate("pixels")
            ev = store.evaluate("pixels", EvaluationParams(folds=2))
            df = store.export_table(ExportOptions(space="pixels"))
        results.append(score_export(df, truth, ev.review.expected_accuracy, "propagation"))
    return results


def summary_row(label: str, space: str, res: list[Flagged]) -> list[str]:
    acc = [r.unflagged_accuracy for r in res]
    flag = [r.flagged for r in res]
    exp = [r.expected for r in res if r.expected is not None]
    chosen = sorted({r.method for r in res})
    ok = np.mean(acc) >= TARGET and np.mean(flag) <= MAX_FLAGGED
    return [
        label,
        space,
        ", ".join(chosen),
        f"{np.mean([r.accuracy for r in res]):.3f}",
        f"{np.mean(flag):.3f} ({max(flag):.3f})",
        f"{np.mean(acc):.3f} ({min(acc):.3f})",
        f"{sum(a >= TARGET for a in acc)} / {len(acc)}",
        f"{np.mean(exp):.3f}" if exp else "–",
        "met" if ok else "MISSED",
    ]


HEADER = [
    "case",
    "space",
    "method used",
    "accuracy all",
    "flagged mean (max)",
    "unflagged accuracy mean (min)",
    f"draws unflagged >= {TARGET}",
    "expected (evaluate)",
    f"target: >= {TARGET} with <= {MAX_FLAGGED:.0%} flagged",
]


def compare_table(template: Path, work: Path, space: str, rows, paths, is_pos) -> list[list[str]]:
    from vecstore.params import EvaluationParams

    with labeled_store(template, work, rows, paths, is_pos) as store:
        cmp_ = store.compare_methods(space, EvaluationParams(positive=POSITIVE))
    out = []
    for r in cmp_.rows:
        cells = [f"{r.mean[m]:.3f} ± {r.std[m]:.3f}" for m in METHOD_METRICS]
        out.append([space, r.method + (" (best)" if r.method == cmp_.best else ""), *cells])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--draws", type=int, default=10)
    p.add_argument("--methods", default=",".join(METHODS))
    args = p.parse_args(argv)
    methods = args.methods.split(",")
    t0 = time.perf_counter()
    load = os.getloadavg()[0]
    with contextlib.ExitStack() as stack:
        out = out_folder(stack, None, "vecstore-review-", ())
        from vecstore.store import Store

        paths, is_pos = write_images(out)
        template = out / "template"
        with Store.open(template, write=True, create=True) as store:
            store.ingest(out / "digits", spaces=list(SPACES))
        rows_out, cmp_rows = [], []
        for space in SPACES:
            for method in methods:
                res = []
                for seed in range(args.draws):
                    log(f"{space} {method}: draw {seed}")
                    rows = draw(is_pos, 100, seed)
                    res.append(
                        binary_draw(
                            template,
                            out / "work",
                            space,
                            method,
                            rows,
                            paths,
                            is_pos,
                            out / "truth.csv",
                        )
                    )
                rows_out.append(summary_row(f"binary 3/5/8, 100 labels, {method}", space, res))
            cmp_rows += compare_table(
                template, out / "work", space, draw(is_pos, 100, 0), paths, is_pos
            )
        digits = digits_draws(out, args.draws)
        rows_out.append(summary_row("digits, 2 labels/digit", "pixels", digits))
    print("\n".join(machine_lines(load)))
    print(f"- command: `.venv/bin/python bench/review_flag.py --draws {args.draws}`")
    print(f"- {N_IMAGES} binary images; {args.draws} draws; {time.perf_counter() - t0:.0f} s\n")
    print(markdown_table(HEADER, rows_out))
    print()
    print(
        markdown_table(
            [
                "space",
                "method",
                "accuracy",
                "balanced accuracy",
                "recall cancer",
                "F2 cancer",
                "ROC-AUC",
            ],
            cmp_rows,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
