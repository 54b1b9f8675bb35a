"""The low-level choices behind vecstore's scale path, measured on bench/synth.py vectors.

1. IVF lists (``--n``, default 1M x 512): ``IVF{nlist},SQ8`` for nlist = 2 sqrt(n) and
   4 sqrt(n) (rounded to powers of two), each trained the way ``Store.build_index`` does
   (40 vectors a list), filled, then tuned by ``SpaceIndex.tune`` to recall@10 >= 0.95:
   seconds for each step, the tuned nprobe and recall, and the p50 / p95 latency of 300
   single queries (``SpaceIndex.search``).
2. Exact top-k blocks (the IVF self-join's, the exact graph's, an IVF quantizer's assignment of
   a chunk of vectors to their list, the recall sample's): ``faiss.knn`` as it is, ``faiss.knn``
   forced onto BLAS for any number of queries, and numpy (matrix product + argpartition).
3. Conjugate gradient on the k-NN graph of ``--graph-n`` rows (``LabelPropagation``'s
   I - 0.99 S): a sparse matrix-vector product and scipy's cg per class, with the rows in
   database order and renumbered by reverse Cuthill-McKee.

    .venv/bin/python bench/kernels.py --record           # about 12 minutes here
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from benchutil import machine_line, markdown_table, record
from synth import Mixture

from vecstore.learn.graph import knn_graph, normalized_affinity
from vecstore.learn.knn import normalize
from vecstore.search.index import SpaceIndex


def timed(f, repeat: int = 1):
    f()
    t0 = time.perf_counter()
    for _ in range(repeat):
        out = f()
    return (time.perf_counter() - t0) / repeat, out


def ivf_lists(x: np.ndarray) -> tuple[str, list]:
    n = len(x)
    ids = np.arange(1, n + 1, dtype=np.int64)
    rows = []
    for mult in (2, 4):
        nlist = int(2 ** round(np.log2(mult * np.sqrt(n))))
        idx = SpaceIndex.empty(x.shape[1], f"IVF{nlist},SQ8")
        rng = np.random.default_rng(0)
        sample = x[np.sort(rng.choice(n, size=min(n, max(40 * nlist, 20000)), replace=False))]
        t0 = time.perf_counter()
        idx.train(sample)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for s in range(0, n, 65536):
            idx.add(ids[s : s + 65536], x[s : s + 65536])
        add_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        tuned = idx.tune(x, ids)
        tune_s = time.perf_counter() - t0
        times = []
        for r in rng.choice(n, size=300, replace=False):
            t0 = time.perf_counter()
            idx.search(x[r : r + 1], 10)
            times.append(time.perf_counter() - t0)
        rows.append(
            [
                f"IVF{nlist},SQ8 ({mult} sqrt(n))",
                f"{train_s:.1f}",
                f"{add_s:.1f}",
                f"{tune_s:.1f}",
                f"{train_s + add_s + tune_s:.1f}",
                f"nprobe {tuned['params']['nprobe']}",
                f"{tuned['recall']:.3f}",
                f"{1000 * np.median(times):.2f} / {1000 * np.percentile(times, 95):.2f}",
            ]
        )
        print(rows[-1], flush=True)
        del idx
    return (
        f"IVF lists on {n:,} x {x.shape[1]}, SQ8, tuned to recall@10 >= 0.95 on 1,000 queries:\n\n"
        + markdown_table(
            [
                "index",
                "train s",
                "add s",
                "tune s",
                "build s",
                "tuned",
                "recall@10",
                "1 query p50 / p95 ms",
            ],
            rows,
            [":--", "--:", "--:", "--:", "--:", ":--", "--:", "--:"],
        )
    )


@contextmanager
def blas_always():
    """faiss.knn through BLAS for any number of queries (faiss's scalar loop is taken below
    distance_compute_blas_threshold = 128,000 queries): the alternative measured here."""
    cv = faiss.cvar
    old = cv.distance_compute_blas_threshold, cv.distance_compute_blas_database_bs
    cv.distance_compute_blas_threshold, cv.distance_compute_blas_database_bs = 1, 4096
    try:
        yield
    finally:
        cv.distance_compute_blas_threshold, cv.distance_compute_blas_database_bs = old


def knn_blocks(x: np.ndarray) -> str:
    def numpy_topk(q, db, k):
        s = q @ db.T
        part = np.argpartition(s, -k, axis=1)[:, -k:]
        return np.take_along_axis(s, part, axis=1), part

    def faiss_knn(q, db, k):
        return faiss.knn(q, db, k, metric=faiss.METRIC_INNER_PRODUCT)

    def faiss_blas(q, db, k):
        with blas_always():
            return faiss.knn(q, db, k, metric=faiss.METRIC_INNER_PRODUCT)

    rows = []
    for what, nq, nb in (
        ("join block: rows probing a cell x its members", 16384, 490),
        ("old cell-by-cell join block: a cell x its probed cells", 200, 12500),
        ("join block, small cell", 2048, 200),
        ("exact graph block (20k rows)", 4096, 20000),
        ("IVF add: a chunk x 2048 centroids", 65536, 2048),
        ("recall sample x all rows", 1000, len(x)),
    ):
        q, db = x[:nq].copy(), x[-nb:].copy()
        gf = 2 * nq * nb * x.shape[1] / 1e9
        rep = max(1, int(20 / gf))
        cells = []
        for f in (faiss_knn, faiss_blas, numpy_topk):
            s, _ = timed(lambda f=f, q=q, db=db: f(q, db, 6), rep)
            cells.append(f"{1000 * s:.1f} ms ({gf / s:.0f} GFLOPS)")
        rows.append([what, f"{nq:,} x {nb:,}", *cells])
        print(rows[-1], flush=True)
    return "Exact top-6 inner products, 512-d, one block:\n\n" + markdown_table(
        [
            "block",
            "queries x rows",
            "faiss.knn (default)",
            "faiss.knn, BLAS forced",
            "numpy matmul + argpartition",
        ],
        rows,
        [":--", "--:", "--:", "--:", "--:"],
    )


def cg_order(x: np.ndarray, y: np.ndarray, classes: int = 6) -> str:
    import scipy.sparse as sp
    from scipy.sparse.csgraph import reverse_cuthill_mckee
    from scipy.sparse.linalg import cg

    n = len(x)
    t0 = time.perf_counter()
    w, stats = knn_graph(x, 5, 3.0, return_stats=True)
    graph_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    perm = reverse_cuthill_mckee(w, symmetric_mode=True)
    rcm_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    labeled = np.zeros(n, bool)
    labeled[rng.choice(n, size=n // 100, replace=False)] = True
    rows = []
    for name, order in (("database order", np.arange(n)), ("reverse Cuthill-McKee", perm)):
        ww = w[order][:, order]
        a = (sp.identity(n, format="csr") - 0.99 * normalized_affinity(ww)).tocsr()
        v = rng.random(n)
        mv, _ = timed(lambda a=a, v=v: a @ v, 10)
        total_it, t0 = 0, time.perf_counter()
        for c in range(classes):
            rhs = np.zeros(n)
            seeds = np.flatnonzero((labeled & (y == c))[order])
            rhs[seeds] = 1.0 / len(seeds)
            count = [0]
            cg(
                a,
                rhs,
                rtol=1e-6,
                maxiter=100,
                callback=lambda _, count=count: count.__setitem__(0, count[0] + 1),
            )
            total_it += count[0]
        cg_s = time.perf_counter() - t0
        rows.append(
            [
                name,
                f"{1000 * mv:.1f}",
                f"{total_it}",
                f"{1000 * cg_s / total_it:.1f}",
                f"{cg_s / classes:.2f}",
            ]
        )
        print(rows[-1], flush=True)
    return (
        f"Conjugate gradient on the 5-NN graph of {n:,} vectors ({stats.method}, "
        f"nprobe {stats.nprobe}, recall {stats.recall:.3f}; graph {graph_s:.0f} s, "
        f"reverse Cuthill-McKee {rcm_s:.1f} s), "
        f"scipy.sparse.linalg.cg per class, {classes} classes, 1 % seeds:\n\n"
        + markdown_table(
            ["row order", "A @ v ms", "CG iterations", "ms per iteration", "s per class"],
            rows,
            [":--", "--:", "--:", "--:", "--:"],
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--n", type=int, default=1_000_000, help="vectors for the IVF lists and the blocks"
    )
    ap.add_argument("--graph-n", type=int, default=1_000_000, help="vectors for the CG graph")
    ap.add_argument("--record", action="store_true")
    a = ap.parse_args()
    load = os.getloadavg()[0]
    x, y = Mixture().generate(max(a.n, a.graph_n))
    normalize(x, inplace=True)
    parts = [knn_blocks(x[: a.n]), ivf_lists(x[: a.n]), cg_order(x[: a.graph_n], y[: a.graph_n])]
    body = "\n\n".join(parts)
    print(body)
    if a.record:
        record(
            "Kernels (bench/kernels.py)",
            [machine_line(load), "data: bench/synth.py Mixture(), L2-normalised"],
            "python " + shlex.join(["bench/kernels.py", *sys.argv[1:]]),
            body,
        )


if __name__ == "__main__":
    main()
