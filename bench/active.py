"""Active-learning benchmark: does `vecstore suggest` pick better images to label than chance?

On scikit-learn's digits (1,797 images, space ``pixels``): start from 10 expert labels drawn
at random, add 10 per round for 5 rounds, either the 10 images ``Store.suggest`` picks or 10
drawn at random from the unlabeled ones; after each round, propagate (``Store.propagate``'s
defaults through ``LabelPropagation``) and score the accuracy on every unlabeled image. 5
seeds; both strategies start from the same 10 labels. Target: the suggested picks give a
higher mean accuracy than random at every round. The labels come from the true digits, as if
an expert labeled each suggested image.

    .venv/bin/python bench/active.py --record
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchutil import machine_line, markdown_table, record


def accuracy(x: np.ndarray, y: np.ndarray, labeled: list[int]) -> float:
    from vecstore.learn.propagation import LabelPropagation

    seeds = np.full(len(y), -1)
    seeds[labeled] = y[labeled]
    pred = LabelPropagation().fit(x, seeds).transduction_
    mask = np.ones(len(y), bool)
    mask[labeled] = False
    return float((pred[mask] == y[mask]).mean())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--start", type=int, default=10)
    ap.add_argument("--per-round", type=int, default=10)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    from vecstore.demo import write_digits
    from vecstore.store import Store

    load = os.getloadavg()[0]
    curves: dict[str, list[list[float]]] = {"suggest": [], "random": []}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vecstore-active-") as tmp:
        write_digits(tmp)
        with Store.open(Path(tmp) / "store", create=True) as store:
            store.ingest(tmp, ["pixels"])
            truth = store.read_truth(Path(tmp) / "truth.csv")
            _, ids, x = store.matrix("pixels")
            y = np.array([int(truth[int(i)]) for i in ids])
            row_of = {int(i): r for r, i in enumerate(ids)}
            for seed in range(args.seeds):
                start = [
                    int(v)
                    for v in np.random.default_rng(seed).choice(len(ids), args.start, replace=False)
                ]
                for strategy in curves:
                    print(f"seed {seed}: {strategy}", file=sys.stderr)
                    for iid in list(store.expert_labels()):  # reset the store's labels
                        store.remove_label(str(iid))
                    labeled = list(start)
                    for r in labeled:
                        store.set_label(str(int(ids[r])), str(y[r]), new_class=True)
                    curve = [accuracy(x, y, labeled)]
                    rng = np.random.default_rng(1000 + seed)
                    for rnd in range(args.rounds):
                        if strategy == "suggest":
                            picks = [
                                row_of[s.image_id]
                                for s in store.suggest(args.per_round, "pixels", seed=rnd)
                            ]
                        else:
                            pool = np.setdiff1d(np.arange(len(ids)), labeled)
                            picks = [
                                int(v) for v in rng.choice(pool, args.per_round, replace=False)
                            ]
                        assert not set(picks) & set(labeled), "a pick was already labeled"
                        for r in picks:
                            store.set_label(str(int(ids[r])), str(y[r]), new_class=True)
                        labeled += picks
                        curve.append(accuracy(x, y, labeled))
                    curves[strategy].append(curve)
    seconds = time.perf_counter() - t0
    sug, rnd_ = np.array(curves["suggest"]), np.array(curves["random"])
    wins = sug.mean(0)[1:] > rnd_.mean(0)[1:]
    header = [
        "labels",
        "suggest (mean)",
        "suggest (min)",
        "random (mean)",
        "random (min)",
        "suggest better",
    ]
    rows = []
    for j in range(args.rounds + 1):
        rows.append(
            [
                str(args.start + j * args.per_round),
                f"{sug[:, j].mean():.4f}",
                f"{sug[:, j].min():.4f}",
                f"{rnd_[:, j].mean():.4f}",
                f"{rnd_[:, j].min():.4f}",
                "start" if j == 0 else ("yes" if wins[j - 1] else "NO"),
            ]
        )
    verdict = "PASS" if wins.all() else "FAIL"
    command = shlex.join(["python", "bench/active.py", *sys.argv[1:]])
    lines = [
        machine_line(load),
        f"command: `{command}`",
        f"{args.seeds} seeds, start {args.start} random labels, +{args.per_round} per round, "
        f"{args.rounds} rounds; accuracy on the unlabeled digits; {seconds:.0f} s in all",
        f"target: suggest above random at every round: {verdict}",
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(
        "\n".join(lines),
        "",
        "  ".join(h.ljust(w) for h, w in zip(header, widths)),
        *("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows),
        sep="\n",
    )
    if args.record:
        notes = [lines[0], *lines[2:]]
        path = record("active", notes, command, markdown_table(header, rows))
        print(f"recorded in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
