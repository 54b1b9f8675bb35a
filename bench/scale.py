"""Scale benchmark: vecstore on 10k / 100k / 1M synthetic 512-d vectors, against scikit-learn.

For each size n (``--sizes``), on a mixture of 100 clusters from ``bench/synth.py`` (10-NN
purity printed: the clusters' neighbourhoods overlap), with 1 % of the images labeled at
random (class names c0..c99):

- ``vecstore import-vectors x.npy --paths paths.txt --space synth`` (rows, then the index
  build and tuning), ``vecstore labels import``, ``vecstore propagate``,
  ``vecstore cluster -k 100``: each a separate process, its wall time and peak RSS measured
  (``os.wait4``; the import's RSS includes the pages of the memory-mapped .npy it reads);
- loading all vectors of the space (``Store.vectors``), in process;
- single queries (``Store.query(image_id=...)``, a warm store, 200 random images): p50 / p95
  latency, and recall@10 of the hits against exact search (FAISS Flat) over all vectors;
- the accuracy of the pseudo-labels of the unlabeled images against the true clusters.

Baselines, in the same run:

- scikit-learn ``LabelSpreading(kernel="knn")`` (its defaults: 7 neighbours, 30 iterations)
  on the 100k vectors and labels, against ``vecstore.learn.propagation.LabelPropagation`` at its
  defaults on the same arrays, each in a fresh process: time ratio and accuracies. At 1M
  scikit-learn runs with a memory cap (``--sklearn-memory``) and a time limit
  (``--sklearn-timeout``): what it did is reported (finished, killed, or out of memory).
- scikit-learn ``KMeans(k=100, init="k-means++", n_init=1, max_iter=25, tol=0)`` against
  ``FaissKMeans(100, n_init=1, max_iter=25)`` on all of the first 200k vectors (L2-normalised,
  same objective): time ratio and inertia ratio; the inertia of ``vecstore cluster``'s own
  settings (10 restarts, trained on a 512-per-cluster sample) is reported too.

Run from the repository root (about 35 minutes on a 2-core machine)::

    .venv/bin/python bench/scale.py --record
    .venv/bin/python bench/scale.py --sizes 10000,100000     # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from benchutil import machine_line, markdown_table, record
from synth import Mixture, neighbour_purity

VECSTORE = str(Path(sys.executable).with_name("vecstore"))


def run_rss(args: list[str]) -> tuple[float, float, str]:
    """Run a command; (seconds, peak RSS of the child in MiB from os.wait4, stdout)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as fout, tempfile.TemporaryFile("w+") as ferr:
        p = subprocess.Popen(args, stdout=fout, stderr=ferr, text=True)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - t0
        fout.seek(0)
        ferr.seek(0)
        out, err = fout.read(), ferr.read()
    if p.returncode:
        raise SystemExit(f"{shlex.join(args)} failed ({p.returncode}):\n{err[-3000:]}")
    return seconds, ru.ru_maxrss / 1024, out


def make_data(n: int, folder: Path, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """x.npy, paths.txt, labels.csv (1 % labeled); returns (true labels, labeled mask)."""
    y = Mixture().write_npy(n, str(folder / "x.npy"))
    with open(folder / "paths.txt", "w") as f:
        f.writelines(f"img/{i:07d}.png\n" for i in range(n))
    rng = np.random.default_rng(seed)
    labeled = np.zeros(n, bool)
    labeled[rng.choice(n, size=max(200, n // 100), replace=False)] = True
    with open(folder / "labels.csv", "w") as f:
        f.write("path,label\n")
        f.writelines(
            f"{folder / 'img' / f'{i:07d}.png'},c{y[i]}\n" for i in np.flatnonzero(labeled)
        )
    return y, labeled


def accuracy_of_run(store_path: Path, run_id: int, y: np.ndarray, labeled: np.ndarray) -> float:
    import sqlite3

    con = sqlite3.connect(store_path / "vecstore.db")
    rows = con.execute(
        "SELECT i.path, p.label FROM predictions p JOIN images i ON i.id = p.image_id "
        "WHERE p.run_id = ?",
        (run_id,),
    ).fetchall()
    con.close()
    right = total = 0
    for path, label in rows:
        i = int(Path(path).stem)
        if not labeled[i]:
            total += 1
            right += label == f"c{y[i]}"
    return right / total


def query_latency(store_path: Path, n_queries: int = 200) -> dict:
    from vecstore.learn.knn import exact_knn, normalize
    from vecstore.store import Store

    with Store.open(store_path) as st:
        sp = st.get_space("synth")
        t0 = time.perf_counter()
        ids, x = st.vectors(sp)
        load_s = time.perf_counter() - t0
        normalize(x, inplace=True)
        st.query(image_id=int(ids[0]), space="synth", k=10)  # warm: index loaded once
        rng = np.random.default_rng(7)
        qrows = rng.choice(len(ids), size=n_queries, replace=False)
        times, hits = [], []
        for r in qrows:
            t = time.perf_counter()
            res = st.query(image_id=int(ids[r]), space="synth", k=10)
            times.append(time.perf_counter() - t)
            hits.append([h.id for h in res.hits])
        _, exact = exact_knn(x[qrows], x, 10, exclude=qrows)
        recall = np.mean([len(set(h) & set(ids[e].tolist())) / 10 for h, e in zip(hits, exact)])
        info = next(s for s in st.info().spaces if s.name == "synth")
    return {
        "load_s": load_s,
        "p50_ms": 1000 * np.median(times),
        "p95_ms": 1000 * np.percentile(times, 95),
        "recall": float(recall),
        "index": info.index_type,
        "params": info.index_params,
        "tuned_recall": info.index_recall_at_10,
    }


def sklearn_spreading(x: np.ndarray, y: np.ndarray, labeled: np.ndarray) -> tuple[float, float]:
    from sklearn.semi_supervised import LabelSpreading

    yy = np.where(labeled, y, -1)
    t0 = time.perf_counter()
    pred = LabelSpreading(kernel="knn").fit(x, yy).transduction_
    return time.perf_counter() - t0, float((pred[~labeled] == y[~labeled]).mean())


def vecstore_spreading(
    x: np.ndarray, y: np.ndarray, labeled: np.ndarray
) -> tuple[float, float, dict]:
    from vecstore.learn.propagation import LabelPropagation

    classes = np.unique(y[labeled])
    code = np.full(y.max() + 1, -1)
    code[classes] = np.arange(len(classes))
    yy = np.where(labeled, code[y], -1)
    t0 = time.perf_counter()
    lp = LabelPropagation().fit(x, yy)
    seconds = time.perf_counter() - t0
    pred = classes[lp.label_distributions_.argmax(axis=1)]
    return seconds, float((pred[~labeled] == y[~labeled]).mean()), lp.graph_.to_dict()


def spreading_child(which: str, folder: str, n: int, timeout: int, memory: int) -> dict | str:
    """``sklearn_spreading`` or ``vecstore_spreading`` on the first n vectors, in a fresh child
    process capped at ``memory`` bytes and ``timeout`` seconds: its result as a dict, or what
    stopped it. A child of its own for each: scikit-learn's OpenMP runtime and faiss's, loaded
    in one process, slowed scikit-learn's neighbour search 2.4x in a first run here."""
    code = (
        "import sys, json, numpy as np, resource\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({memory}, {memory}))\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        f"from scale import {which}_spreading as run\n"
        f"x = np.load({folder!r} + '/x.npy', mmap_mode='r')[:{n}].astype(np.float32)\n"
        "x /= np.linalg.norm(x, axis=1, keepdims=True)\n"
        f"y = np.load({folder!r} + '/y.npy')[:{n}]\n"
        f"lab = np.load({folder!r} + '/labeled.npy')[:{n}]\n"
        "r = run(x, y, lab)\n"
        "print(json.dumps({'seconds': r[0], 'accuracy': r[1], 'graph': (r[2:] or [None])[0]}))\n"
    )
    t0 = time.perf_counter()
    try:
        p = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return (
            f"did not finish within {timeout} s (killed; memory capped at {memory / 2**30:.0f} GiB)"
        )
    if p.returncode:
        last = (p.stderr.strip().splitlines() or ["?"])[-1]
        return f"failed after {time.perf_counter() - t0:.0f} s: {last[:200]}"
    return json.loads(p.stdout.strip().splitlines()[-1])


def kmeans_compare(x: np.ndarray) -> dict:
    from sklearn.cluster import KMeans

    from vecstore.learn.cluster import FaissKMeans

    t0 = time.perf_counter()
    sk = KMeans(100, init="k-means++", n_init=1, max_iter=25, tol=0, random_state=0).fit(x)
    sk_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    fk = FaissKMeans(100, n_init=1, max_iter=25, max_points_per_centroid=1 << 30).fit(x)
    fk_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    fk10 = FaissKMeans(100).fit(x)  # what `vecstore cluster -k 100` runs
    fk10_s = time.perf_counter() - t0
    return {
        "sk_s": sk_s,
        "sk_inertia": float(sk.inertia_),
        "sk_iter": int(sk.n_iter_),
        "fk_s": fk_s,
        "fk_inertia": fk.inertia_,
        "fk10_s": fk10_s,
        "fk10_inertia": fk10.inertia_,
    }


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--out", help="work folder (default: a temporary one, removed)")
    ap.add_argument("--sklearn-timeout", type=int, default=600)
    ap.add_argument("--sklearn-memory", default="12", help="GiB for scikit-learn at 1M")
    ap.add_argument("--record", action="store_true")
    return ap.parse_args()


def measure(n: int, folder: Path) -> dict:
    """import-vectors, labels import, propagate and cluster on n vectors, each a process of
    its own; then the query latency, the accuracy and the data's neighbour purity."""
    folder.mkdir(parents=True, exist_ok=True)
    y, labeled = make_data(n, folder, seed=0)
    np.save(folder / "y.npy", y)
    np.save(folder / "labeled.npy", labeled)
    store = folder / "store"
    vs = [VECSTORE, "--store", str(store)]
    r: dict = {}
    vectors = [str(folder / "x.npy"), "--paths", str(folder / "paths.txt")]
    r["import"] = run_rss(
        [*vs, "import-vectors", *vectors, "--space", "synth", "--base", str(folder), "--json"]
    )
    imp = json.loads(r["import"][2])
    run_rss([*vs, "labels", "import", str(folder / "labels.csv")])
    r["propagate"] = run_rss([*vs, "propagate", "--space", "synth", "--json"])
    prop = json.loads(r["propagate"][2])
    r["cluster"] = run_rss([*vs, "cluster", "--space", "synth", "-k", "100", "--json"])
    return {
        "import_rows_s": imp["seconds_rows"],
        **{k: v[:2] for k, v in r.items()},
        "query": query_latency(store),
        "accuracy": accuracy_of_run(store, prop["run_id"], y, labeled),
        "graph": prop["graph"],
        "purity": neighbour_purity(np.load(folder / "x.npy"), y),
        "labels": int(labeled.sum()),
    }


def baselines(n: int, folder: Path, a: argparse.Namespace) -> list[tuple]:
    """scikit-learn against vecstore at the sizes where each comparison is made."""
    extra: list[tuple] = []
    cap = int(float(a.sklearn_memory) * 2**30)
    if n == 100000:
        sk = spreading_child("sklearn", str(folder), n, 3600, cap)
        vs = spreading_child("vecstore", str(folder), n, 3600, cap)
        if isinstance(sk, str) or isinstance(vs, str):
            raise SystemExit(f"label spreading at 100k: scikit-learn {sk}; vecstore {vs}")
        extra.append(
            (
                "LabelSpreading 100k",
                sk["seconds"],
                sk["accuracy"],
                vs["seconds"],
                vs["accuracy"],
                vs["graph"],
            )
        )
    if n >= 200000:
        x = np.load(folder / "x.npy", mmap_mode="r")[:200000].astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        extra.append(("KMeans 200k", kmeans_compare(x)))
        del x
    if n >= 1000000:
        res = spreading_child("sklearn", str(folder), n, a.sklearn_timeout, cap)
        if isinstance(res, dict):
            res = f"finished in {res['seconds']:.0f} s, accuracy {res['accuracy']:.3f}"
        extra.append(("LabelSpreading 1M", res))
    for e in extra:
        print(e, flush=True)
    return extra


COLUMNS = [
    "n",
    "10-NN purity",
    "import rows s",
    "import+index s / MiB",
    "load s",
    "propagate s / MiB",
    "accuracy",
    "graph",
    "cluster -k 100 s / MiB",
    "index",
    "query p50 / p95 ms",
    "query recall@10",
]


def step_row(n: int, s: dict) -> list[str]:
    q, g = s["query"], s["graph"]
    return [
        f"{n:,}",
        f"{s['purity']:.3f}",
        f"{s['import_rows_s']:.1f}",
        f"{s['import'][0]:.1f} / {s['import'][1]:,.0f}",
        f"{q['load_s']:.1f}",
        f"{s['propagate'][0]:.1f} / {s['propagate'][1]:,.0f}",
        f"{s['accuracy']:.3f}",
        f"{g['method']} nprobe {g['nprobe']} recall {g['recall']:.3f}",
        f"{s['cluster'][0]:.1f} / {s['cluster'][1]:,.0f}",
        f"{q['index']} {q['params']}",
        f"{q['p50_ms']:.2f} / {q['p95_ms']:.2f}",
        f"{q['recall']:.3f}",
    ]


def growth_table(steps: dict[int, dict]) -> str:
    ns = sorted(steps)
    growth = []
    for lo, hi in zip(ns, ns[1:]):
        cells = []
        for k in ("import", "propagate", "cluster"):
            t, m = steps[hi][k][0] / steps[lo][k][0], steps[hi][k][1] / steps[lo][k][1]
            cells.append(f"time x{t:.1f}, memory x{m:.1f}")
        growth.append([f"{lo:,} -> {hi:,} (x{hi / lo:.0f})", *cells])
    return "\n\nGrowth (time and peak memory ratios between sizes):\n\n" + markdown_table(
        ["sizes", "import", "propagate", "cluster"], growth, [":--", "--:", "--:", "--:"]
    )


def extra_text(e: tuple) -> str:
    if e[0] == "LabelSpreading 100k":
        _, sk_s, sk_acc, vs_s, vs_acc, g = e
        return (
            f"scikit-learn LabelSpreading(kernel='knn') on 100k: {sk_s:.1f} s, accuracy "
            f"{sk_acc:.3f}; vecstore LabelPropagation on the same arrays: {vs_s:.1f} s, accuracy "
            f"{vs_acc:.3f} (graph {g['method']}, nprobe {g['nprobe']}, recall {g['recall']:.3f}): "
            f"**{sk_s / vs_s:.1f}x faster**, accuracy {100 * (vs_acc - sk_acc):+.1f} points."
        )
    if e[0] == "KMeans 200k":
        km = e[1]
        return (
            f"k-means on 200k x 512, k = 100, 25 iterations, 1 init: scikit-learn KMeans "
            f"(k-means++) {km['sk_s']:.1f} s, inertia {km['sk_inertia']:.1f} ({km['sk_iter']} "
            f"iterations); vecstore FaissKMeans {km['fk_s']:.1f} s, inertia "
            f"{km['fk_inertia']:.1f}: time ratio **{km['sk_s'] / km['fk_s']:.1f}x**, inertia "
            f"ratio vecstore/sklearn **{km['fk_inertia'] / km['sk_inertia']:.4f}**. vecstore "
            f"cluster's own settings (10 restarts, sample of 512 per cluster): "
            f"{km['fk10_s']:.1f} s, inertia {km['fk10_inertia']:.1f} (ratio "
            f"{km['fk10_inertia'] / km['sk_inertia']:.4f})."
        )
    return f"scikit-learn LabelSpreading(kernel='knn') at 1M: {e[1]}."


def main() -> None:
    a = parse_args()
    load = os.getloadavg()[0]
    work = Path(a.out or tempfile.mkdtemp(prefix="vecstore-scale-"))
    steps: dict[int, dict] = {}
    extra: list[tuple] = []
    for n in [int(s) for s in a.sizes.split(",")]:
        steps[n] = measure(n, work / f"n{n}")
        print(n, json.dumps(steps[n], default=str), flush=True)
        extra += baselines(n, work / f"n{n}", a)
    align = ["--:", "--:", "--:", "--:", "--:", "--:", "--:", ":--", "--:", ":--", "--:", "--:"]
    body = markdown_table(COLUMNS, [step_row(n, s) for n, s in steps.items()], align)
    if len(steps) > 1:
        body += growth_table(steps)
    body += "".join("\n\n" + extra_text(e) for e in extra)
    print(body)
    if a.record:
        notes = [
            machine_line(load),
            "data: bench/synth.py Mixture() (100 clusters in families of 10, "
            "rank-24 subspaces, 512-d), 1 % labeled at random; accuracy on the unlabeled images",
            "times in seconds, memory = peak RSS of the command's process (MiB)",
        ]
        command = "python " + shlex.join(["bench/scale.py", *sys.argv[1:]])
        record("Scale (bench/scale.py)", notes, command, body)
    if not a.out:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
