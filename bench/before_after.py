"""Two installs of vecstore on the same data, command for command, taking turns.

For a change that must not change speed (a restructuring, say): the CLI of this checkout
(the `vecstore` beside this Python) and a baseline CLI (``--baseline``, the `vecstore` of
another environment, e.g. one where an older commit was pip-installed) run the same commands
on the same synthetic vectors (``bench/synth.py``, 1 % labeled), each in a fresh process and
on a fresh copy of a store, ``--repeat`` times, alternating (baseline, this, baseline, ...)
so that a machine that slows down or speeds up during the run weighs on both alike.

Commands timed on n vectors: ``import-vectors`` (into an empty store), ``propagate`` and
``cluster -k 100`` (on a store holding the imported vectors and labels). Reported: the
median and the spread of the wall times, the peak RSS, the ratio this / baseline of the
medians, and whether the two gave the same pseudo-labels and clusters (row for row).

    python bench/before_after.py --baseline /tmp/venv-before/bin/vecstore --n 100000 --record
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sqlite3
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from benchutil import machine_line, markdown_table, record
from scale import VECSTORE, make_data, run_rss


def import_cmd(cli: str, store: Path, data: Path) -> list[str]:
    paths = ["--paths", str(data / "paths.txt"), "--base", str(data)]
    return [
        cli,
        "--store",
        str(store),
        "import-vectors",
        str(data / "x.npy"),
        *paths,
        "--space",
        "synth",
        "--json",
    ]


def prepared_store(cli: str, data: Path, where: Path) -> Path:
    """A store with the vectors and the labels, made by ``cli`` (its own schema)."""
    store = where / "prepared"
    run_rss(import_cmd(cli, store, data))
    run_rss([cli, "--store", str(store), "labels", "import", str(data / "labels.csv")])
    return store


def outputs(store: Path, kind: str) -> list[tuple]:
    """The pseudo-labels (propagate) or clusters (cluster) of the store's latest run."""
    sql = {
        "propagate": "SELECT image_id, label FROM predictions WHERE run_id = "
        "(SELECT max(id) FROM runs WHERE kind = 'propagate') ORDER BY image_id",
        "cluster": "SELECT image_id, cluster FROM cluster_assignments WHERE run_id = "
        "(SELECT max(id) FROM runs WHERE kind = 'cluster') ORDER BY image_id",
    }[kind]
    con = sqlite3.connect(store / "vecstore.db")
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def stages(store: Path) -> dict[str, float]:
    """The stage times the latest propagation recorded (load, graph, solve, write)."""
    con = sqlite3.connect(store / "vecstore.db")
    try:
        sql = "SELECT json_extract(stats, '$.seconds') FROM runs WHERE kind = 'propagate'"
        return json.loads(con.execute(sql + " ORDER BY id DESC LIMIT 1").fetchone()[0])
    finally:
        con.close()


def one_run(cli: str, step: str, data: Path, prepared: Path, scratch: Path):
    """(seconds, peak MiB, outputs) of one command on a fresh copy of the store."""
    shutil.rmtree(scratch, ignore_errors=True)
    if step == "import-vectors":
        seconds, mib, _ = run_rss(import_cmd(cli, scratch, data))
        return seconds, mib, None
    shutil.copytree(prepared, scratch)
    args = (
        ["propagate", "--space", "synth"]
        if step == "propagate"
        else ["cluster", "--space", "synth", "-k", "100"]
    )
    seconds, mib, _ = run_rss([cli, "--store", str(scratch), *args, "--json"])
    if step == "propagate":
        print("  stages", stages(scratch), flush=True)
    return seconds, mib, outputs(scratch, step)


def compare(args: argparse.Namespace, work: Path) -> list[list[str]]:
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    make_data(args.n, data, seed=0)
    clis = {"baseline": args.baseline, "this": VECSTORE}
    prepared = {k: prepared_store(c, data, work / k) for k, c in clis.items()}
    rows = []
    for step in args.commands.split(","):
        times: dict[str, list[float]] = {k: [] for k in clis}
        mibs: dict[str, list[float]] = {k: [] for k in clis}
        outs: dict[str, list] = {}
        for _ in range(args.repeat):
            for k, cli in clis.items():
                s, m, out = one_run(cli, step, data, prepared[k], work / k / "run")
                times[k].append(s)
                mibs[k].append(m)
                outs[k] = out
                print(step, k, f"{s:.1f} s", flush=True)
        rows.append(row(step, times, mibs, outs))
    return rows


def row(step: str, times: dict, mibs: dict, outs: dict) -> list[str]:
    med = {k: statistics.median(v) for k, v in times.items()}
    cells = [step]
    for k in ("baseline", "this"):
        cells.append(f"{med[k]:.1f} ({min(times[k]):.1f}-{max(times[k]):.1f})")
        cells.append(f"{max(mibs[k]):,.0f}")
    same = "-" if outs["this"] is None else ("yes" if outs["this"] == outs["baseline"] else "NO")
    return [*cells, f"{med['this'] / med['baseline']:.2f}", same]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--baseline", required=True, help="the baseline's `vecstore` executable")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--commands", default="import-vectors,propagate,cluster")
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="vecstore-before-after-"))
    try:
        rows = compare(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    body = markdown_table(
        [
            "command",
            "baseline s median (min-max)",
            "baseline MiB",
            "this s median (min-max)",
            "this MiB",
            "this / baseline",
            "same output",
        ],
        rows,
        [":--", "--:", "--:", "--:", "--:", "--:", ":--"],
    )
    print(body)
    if args.record:
        notes = [
            machine_line(load),
            f"{args.n:,} vectors from bench/synth.py Mixture(), 1 % labeled; "
            f"{args.repeat} runs of each command per install, alternating",
            f"baseline: {args.baseline}; this: {VECSTORE}",
        ]
        command = "python " + shlex.join(["bench/before_after.py", *sys.argv[1:]])
        record("Before and after (bench/before_after.py)", notes, command, body)


if __name__ == "__main__":
    main()
