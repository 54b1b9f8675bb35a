"""Synthetic embeddings for the scale benchmark: a mixture of 100 clusters in 512 dimensions
whose nearest neighbours are not trivially separable.

Each cluster lives near a low-dimensional subspace, as CNN embeddings do: a point is
``center + U_c (s * z) + noise``, with ``U_c`` a random orthonormal basis of rank ``rank`` per
cluster, ``s`` decaying scales, ``z`` standard normal and isotropic noise. The centers come in
10 families of 10 (a family's clusters share most of their center), so a cluster's
neighbours in cosine similarity are often from its siblings: ``neighbour_purity`` measures the
share of each point's exact 10 nearest neighbours that are from its own cluster.

Rows are generated in chunks with one seed per chunk, so any prefix of n rows is the same
whatever the total, and ``write_npy`` streams them to a file without holding them all.

    python bench/synth.py 1000000 --out /tmp/x.npy    # also writes x.labels.npy
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

CHUNK = 65536


@dataclass
class Mixture:
    dim: int = 512
    n_clusters: int = 100
    n_families: int = 10
    rank: int = 24
    family_spread: float = 0.2  # distance of a cluster's center from its family's, relative
    within: float = 1.0  # scale of the in-subspace spread, relative to the centers' norm
    noise: float = 0.3  # isotropic noise per dimension, relative to the centers' norm
    tilt: float = 0.3  # how far a cluster's subspace turns away from its family's
    seed: int = 0

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        d = self.dim
        fam = rng.standard_normal((self.n_families, d)) / np.sqrt(d)
        fam_of = np.arange(self.n_clusters) % self.n_families
        own = rng.standard_normal((self.n_clusters, d)) / np.sqrt(d)
        self.centers = (fam[fam_of] + self.family_spread * own).astype(np.float32)
        self.centers /= np.linalg.norm(self.centers, axis=1, keepdims=True)
        # siblings share their family's subspace (slightly tilted each), so they overlap
        fam_basis = rng.standard_normal((self.n_families, d, self.rank))
        self.bases = np.stack(
            [
                np.linalg.qr(
                    fam_basis[fam_of[c]] + self.tilt * rng.standard_normal((d, self.rank))
                )[0]
                for c in range(self.n_clusters)
            ]
        ).astype(np.float32)  # (C, d, rank)
        self.scales = (self.within * np.linspace(1.0, 0.3, self.rank) / np.sqrt(self.rank)).astype(
            np.float32
        )
        self.weights = rng.dirichlet(np.full(self.n_clusters, 20.0))  # unequal cluster sizes

    def chunk(self, index: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows [index*CHUNK, index*CHUNK + size): (vectors float32, cluster labels)."""
        rng = np.random.default_rng([self.seed, 1, index])
        y = rng.choice(self.n_clusters, size=size, p=self.weights)
        x = rng.standard_normal((size, self.dim), dtype=np.float32)
        x *= self.noise / np.sqrt(self.dim)
        x += self.centers[y]
        z = rng.standard_normal((size, self.rank), dtype=np.float32) * self.scales
        for c in np.unique(y):
            rows = np.flatnonzero(y == c)
            x[rows] += z[rows] @ self.bases[c].T
        return x, y.astype(np.int64)

    def generate(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for i, start in enumerate(range(0, n, CHUNK)):
            x, y = self.chunk(i, min(CHUNK, n - start))
            xs.append(x)
            ys.append(y)
        return np.concatenate(xs), np.concatenate(ys)

    def write_npy(self, n: int, path: str) -> np.ndarray:
        """Stream n rows to a .npy file; returns the labels."""
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, self.dim))
        ys = []
        for i, start in enumerate(range(0, n, CHUNK)):
            x, y = self.chunk(i, min(CHUNK, n - start))
            out[start : start + len(x)] = x
            ys.append(y)
        out.flush()
        del out
        return np.concatenate(ys)


def neighbour_purity(
    x: np.ndarray, y: np.ndarray, k: int = 10, queries: int = 2000, seed: int = 0
) -> float:
    """Mean share of the exact k nearest neighbours (cosine) of sampled rows that come from
    their own cluster."""
    from vecstore.learn.knn import exact_knn, normalize

    xn = normalize(x)
    q = np.sort(
        np.random.default_rng(seed).choice(len(x), size=min(queries, len(x)), replace=False)
    )
    _, nb = exact_knn(xn[q], xn, k, exclude=q)
    return float((y[nb] == y[q][:, None]).mean())


if __name__ == "__main__":
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("n", type=int)
    ap.add_argument("--out", help="write vectors here (.npy) and the labels next to it")
    ap.add_argument("--purity", action="store_true", help="print the 10-NN purity")
    a = ap.parse_args()
    m = Mixture()
    if a.out:
        y = m.write_npy(a.n, a.out)
        np.save(a.out.replace(".npy", ".labels.npy"), y)
    if a.purity:
        x, y = m.generate(a.n)
        print(f"10-NN purity on {a.n:,}: {neighbour_purity(x, y):.3f}")
