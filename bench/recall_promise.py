"""Recall promise benchmark (issue 13): does ``evaluate --target-recall T --confidence C`` keep
its promise on the unlabeled images, and what does it cost against the old hold-out threshold?

The task: the first 1,500 of scikit-learn's digits (8x8, upscaled 4x nearest-neighbour as
``vecstore.demo.digit_images`` does for bench/quality.py), binary and imbalanced: "cancer" =
digits 3, 5, 8 (about 30 %), "normal" = the rest. They are written as PNGs and ingested once
(``Store.ingest``) into the spaces asked for; each draw then works on a fresh copy of that
store (so nothing of one draw reaches the next). For each space, label count N and draw
(seed 0, 1, ...):

1. N expert labels, stratified on cancer/normal (``numpy.random.default_rng(seed)``: a
   permutation of each class's images, the first round(N * share of the class) kept), written
   as a path,label CSV and imported (``Store.import_labels``);
2. ``Store.propagate(space)`` at the propagation defaults;
3. ``Store.evaluate(space, EvaluationParams(positive="cancer", target_recall=0.95,
   confidence=0.9))``: its ``recall_promise`` (the threshold on p(cancer) from out-of-fold
   scores of the expert labels, or declined with the positives it needs) and, from the same
   evaluation, the old rule ``scores.positive.threshold_for_target_recall.threshold`` (one
   stratified hold-out, 5 repeats pooled);
4. ``Store.export_table(ExportOptions(space=space))`` and, on its rows that are not expert
   labels, the true recall and precision of cancer: under the export's own ``label`` (the
   promise when given; the most probable class when declined), and under
   ``p_cancer >= old threshold``.

A promise "holds" in a draw when the true recall on the unlabeled images is >= the target;
with confidence 0.9 it should hold in about 9 draws of 10 or more. The exit status is 0
whatever the results.

Run it from the repository root::

    .venv/bin/python bench/recall_promise.py                       # 10 draws, N = 100 and 200
    .venv/bin/python bench/recall_promise.py --draws 3 --labels 200 --spaces pixels
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from benchutil import machine_lines, markdown_table, out_folder

N_IMAGES = 1500
POSITIVE = "cancer"
NEGATIVE = "normal"
POSITIVE_DIGITS = (3, 5, 8)
TARGET_RECALL = 0.95
CONFIDENCE = 0.9
SPACES = ("pixels", "hog")
LABELS = (100, 200)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# the data
# --------------------------------------------------------------------------------------------


def write_images(out: Path) -> tuple[list[Path], np.ndarray]:
    """The first N_IMAGES digits as PNGs under ``out/digits`` and their binary truth in
    ``out/truth.csv`` (path,label); (paths, True where cancer)."""
    from PIL import Image

    from vecstore.demo import digit_images

    imgs, digits = digit_images()  # 4x upscaled, as vecstore.demo.write_digits writes them
    imgs, digits = imgs[:N_IMAGES], digits[:N_IMAGES]
    is_pos = np.isin(digits, POSITIVE_DIGITS)
    folder = out / "digits"
    folder.mkdir(parents=True)
    paths = []
    for i, img in enumerate(imgs):
        p = (folder / f"digit_{i:04d}.png").resolve()
        Image.fromarray(img, "L").save(p)
        paths.append(p)
    write_label_csv(out / "truth.csv", paths, is_pos)
    return paths, is_pos


def write_label_csv(path: Path, paths: list[Path], is_pos: np.ndarray) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        w.writerows((str(p), POSITIVE if pos else NEGATIVE) for p, pos in zip(paths, is_pos))


def draw(is_pos: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Rows of ``n`` expert labels, stratified on the class: per class (positive first) the
    first round(n * share) of a random permutation of its rows."""
    rng = np.random.default_rng(seed)
    n_pos = round(n * is_pos.mean())
    chosen = [
        rng.permutation(np.flatnonzero(is_pos))[:n_pos],
        rng.permutation(np.flatnonzero(~is_pos))[: n - n_pos],
    ]
    return np.sort(np.concatenate(chosen))


# --------------------------------------------------------------------------------------------
# one draw
# --------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One draw of one space and label count, scored on the unlabeled images."""

    positives: int  # labeled positives the promise rests on
    declined: bool
    needed: int  # positives the promise needs at least
    threshold: float | None  # the promise's threshold on p(cancer)
    old_threshold: float | None  # the hold-out threshold of the same evaluation
    recall: float  # of the export's labels (the promise; most probable when declined)
    precision: float
    called: float  # share of the unlabeled images the export calls cancer
    old_recall: float | None  # of p_cancer >= old_threshold
    old_precision: float | None
    old_called: float | None
    mismatched: int  # given promise: rows whose label disagrees with p_cancer >= threshold
    seconds: float  # import, propagate, evaluate, export


def recall_precision(called: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    tp = int((called & truth).sum())
    return tp / max(int(truth.sum()), 1), tp / int(called.sum()) if called.any() else float("nan")


def one_draw(
    template: Path,
    work: Path,
    space: str,
    paths: list[Path],
    is_pos: np.ndarray,
    rows: np.ndarray,
    truth_csv: Path,
) -> Outcome:
    from vecstore.params import EvaluationParams, ExportOptions
    from vecstore.store import Store

    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(template, work / "store")
    labels_csv = work / "labels.csv"
    write_label_csv(labels_csv, [paths[r] for r in rows], is_pos[rows])
    t0 = time.perf_counter()
    with Store.open(work / "store", write=True) as store:
        imported = store.import_labels(labels_csv, new_class=True)
        if imported.added != len(rows):
            raise SystemExit(f"imported {imported.added} labels, not {len(rows)}")
        store.propagate(space)
        ev = store.evaluate(
            space,
            EvaluationParams(positive=POSITIVE, target_recall=TARGET_RECALL, confidence=CONFIDENCE),
        )
        df = store.export_table(ExportOptions(space=space))
        truth = store.read_truth(truth_csv)
    seconds = time.perf_counter() - t0

    promise = ev.recall_promise
    if promise is None:
        raise SystemExit("the evaluation made no recall promise (nor declined one)")
    old = ev.scores.positive.threshold_for_target_recall if ev.scores.positive else None
    rest = df[df["source"] != "expert"]
    if len(rest) != N_IMAGES - len(rows):
        raise SystemExit(f"{len(rest)} unlabeled rows in the export, not {N_IMAGES - len(rows)}")
    true_pos = (rest["image_id"].map(truth) == POSITIVE).to_numpy()
    p_pos = rest[f"p_{POSITIVE}"].to_numpy(dtype=float)
    called = (rest["label"] == POSITIVE).to_numpy()
    recall, precision = recall_precision(called, true_pos)
    mismatched = 0
    if not promise.declined:
        # the export rounds p_cancer to 6 decimals; the decision used the stored float32
        mismatched = int((called != (p_pos >= round(promise.threshold, 6))).sum())
    old_recall = old_precision = old_called = None
    if old is not None:
        old_call = p_pos >= old.threshold
        old_recall, old_precision = recall_precision(old_call, true_pos)
        old_called = float(old_call.mean())
    return Outcome(
        positives=promise.positives,
        declined=promise.declined,
        needed=promise.positives_needed,
        threshold=promise.threshold,
        old_threshold=old.threshold if old is not None else None,
        recall=recall,
        precision=precision,
        called=float(called.mean()),
        old_recall=old_recall,
        old_precision=old_precision,
        old_called=old_called,
        mismatched=mismatched,
        seconds=seconds,
    )


# --------------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------------

HEADER = [
    "space",
    "N labels",
    "labeled positives",
    "declined",
    "positives needed",
    f"promise: recall >= {TARGET_RECALL}",
    "promise recall mean (min)",
    "promise precision",
    "promise threshold",
    f"old: recall >= {TARGET_RECALL}",
    "old recall mean (min)",
    "old precision",
    "old threshold",
    "declined: argmax recall mean (min) / precision",
    "s per draw",
]
ALIGNS = [":--"] + ["--:"] * (len(HEADER) - 1)


def _mean_min(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ({min(values):.3f})" if values else "–"


def _mean(values: list[float], digits: int = 3) -> str:
    return f"{np.mean(values):.{digits}f}" if values else "–"


def table_row(space: str, n: int, outs: list[Outcome]) -> list[str]:
    given = [o for o in outs if not o.declined]
    declined = [o for o in outs if o.declined]
    old = [o for o in outs if o.old_recall is not None]
    pos = [o.positives for o in outs]
    return [
        space,
        str(n),
        f"{min(pos)}–{max(pos)}" if min(pos) != max(pos) else str(pos[0]),
        f"{len(declined)} / {len(outs)}",
        ", ".join(map(str, sorted({o.needed for o in outs}))),
        f"{sum(o.recall >= TARGET_RECALL for o in given)} / {len(given)}",
        _mean_min([o.recall for o in given]),
        _mean([o.precision for o in given]),
        _mean([o.threshold for o in given]),
        f"{sum(o.old_recall >= TARGET_RECALL for o in old)} / {len(old)}",
        _mean_min([o.old_recall for o in old]),
        _mean([o.old_precision for o in old]),
        _mean([o.old_threshold for o in old]),
        f"{_mean_min([o.recall for o in declined])} / {_mean([o.precision for o in declined])}"
        if declined
        else "–",
        f"{np.mean([o.seconds for o in outs]):.1f}",
    ]


def per_draw_lines(space: str, n: int, outs: list[Outcome]) -> list[str]:
    def f(v: float | None) -> str:
        return "–" if v is None else f"{v:.3f}"

    return [
        f"{space} N={n} seed {s}: positives {o.positives}, "
        + ("declined" if o.declined else f"threshold {o.threshold:.4f}")
        + f", recall {o.recall:.3f}, precision {o.precision:.3f}, called {o.called:.3f}; "
        f"old threshold {f(o.old_threshold)}, recall {f(o.old_recall)}, "
        f"precision {f(o.old_precision)}, called {f(o.old_called)}; {o.seconds:.1f} s"
        + (f"; {o.mismatched} labels disagree with the threshold" if o.mismatched else "")
        for s, o in enumerate(outs)
    ]


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Does the recall promise of `vecstore evaluate` hold on binary digits?"
    )
    p.add_argument("--draws", type=int, default=10, help="draws per space and N (seeds 0..)")
    p.add_argument(
        "--labels",
        type=int,
        nargs="+",
        default=list(LABELS),
        help=f"expert label counts N (default {' '.join(map(str, LABELS))})",
    )
    p.add_argument(
        "--spaces",
        nargs="+",
        default=list(SPACES),
        help=f"embedding spaces (default {' '.join(SPACES)})",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="also write the Markdown (notes and table) to this file; it always goes to "
        "stdout. The images and stores go to a temporary folder, removed at the end",
    )
    args = p.parse_args(argv)
    if args.draws < 1:
        p.error("--draws must be at least 1")
    if any(n < 4 or n >= N_IMAGES for n in args.labels):
        p.error(f"--labels must lie between 4 and {N_IMAGES - 1}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from vecstore.store import Store

    load = os.getloadavg()[0]
    command = shlex.join(["python", "bench/recall_promise.py", *sys.argv[1:]])
    t_start = time.perf_counter()
    results: dict[tuple[str, int], list[Outcome]] = {}
    with contextlib.ExitStack() as stack:
        out = out_folder(stack, None, "vecstore-recall-", ())
        log(f"writing {N_IMAGES} digits under {out}")
        paths, is_pos = write_images(out)
        t0 = time.perf_counter()
        with Store.open(out / "template", create=True) as store:
            store.ingest(out / "digits", list(args.spaces))
            truth = store.read_truth(out / "truth.csv")
        ingest_s = time.perf_counter() - t0
        log(f"ingested into {', '.join(args.spaces)} in {ingest_s:.1f} s")
        if len(truth) != N_IMAGES:
            raise SystemExit(f"{len(truth)} truth rows, not {N_IMAGES}")
        for space in args.spaces:
            for n in args.labels:
                outs = results[space, n] = []
                for seed in range(args.draws):
                    rows = draw(is_pos, n, seed)
                    o = one_draw(
                        out / "template",
                        out / "draw",
                        space,
                        paths,
                        is_pos,
                        rows,
                        out / "truth.csv",
                    )
                    outs.append(o)
                    log(per_draw_lines(space, n, outs)[-1])
    wall = time.perf_counter() - t_start

    notes = [
        *machine_lines(load),
        f"Data: the first {N_IMAGES} scikit-learn digits (4x nearest-neighbour upscale), "
        f"{POSITIVE} = digits {', '.join(map(str, POSITIVE_DIGITS))} "
        f"({int(is_pos.sum())} images, {is_pos.mean():.1%}), {NEGATIVE} = the rest.",
        f"Each draw: N stratified expert labels (seeds 0..{args.draws - 1}), Store.propagate, "
        f"Store.evaluate(positive={POSITIVE}, target_recall={TARGET_RECALL}, "
        f"confidence={CONFIDENCE}), Store.export_table; scored on the unlabeled images.",
        f"Wall time {wall:.0f} s (ingest {ingest_s:.0f} s), the machine possibly shared.",
    ]
    rows = [table_row(space, n, results[space, n]) for space in args.spaces for n in args.labels]
    details = [ln for (space, n), outs in results.items() for ln in per_draw_lines(space, n, outs)]
    markdown = "\n".join(
        [
            *(f"- {n}" for n in notes),
            f"- command: `{command}`",
            "",
            markdown_table(HEADER, rows, ALIGNS),
        ]
    )
    print(markdown)
    print("\nper draw:", *details, sep="\n")
    if args.out is not None:
        args.out.write_text(markdown + "\n")
    if any(o.mismatched for outs in results.values() for o in outs):
        print("\nWARNING: some export labels disagree with p_cancer >= the promise's threshold")
    return 0


if __name__ == "__main__":
    sys.exit(main())
