"""A vector transform applied before the cosine: mean-centring, or PCA whitening to fewer
dimensions. Arrays only: fitting, applying (in chunks, float32) and a fingerprint that tells
one fitted transform from another.

On some embeddings every vector shares a large common component, and the raw cosine then
ranks by it rather than by what tells images apart; subtracting the mean (or whitening with
PCA) removes it. Whether it helps depends on the data, so a space chooses (vecstore.db keeps
the fitted transform of each space).

>>> t = VectorTransform.fit(x, "pca", n_components=50)       # doctest: +SKIP
>>> t.describe(), t.apply(x).shape                            # doctest: +SKIP
('PCA-whitened to 50 dims', (1000, 50))
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..params import ParamError
from .knn import normalize

# what a space's vectors go through before the cosine; "raw": nothing (no stored transform)
TRANSFORM_KINDS = {
    "raw": "cosine of the vectors as embedded",
    "center": "cosine of the vectors minus their mean",
    "pca": "cosine after PCA whitening to N dimensions",
}
RAW = "raw"  # the fingerprint of no transform
MAX_FIT_ROWS = 100_000  # a PCA is fitted on at most this many rows, sampled with the seed
APPLY_ROWS = 65536  # rows transformed at a time


@dataclass(frozen=True)
class TransformParams:
    """Which transform a space gets (a TRANSFORM_KINDS key) and how a PCA is fitted; the
    defaults and checks declared once."""

    kind: str
    n_components: int | None = None  # pca only: the dimensions kept
    seed: int = 0  # the PCA's row sample and randomised solver

    def __post_init__(self) -> None:
        if self.kind not in TRANSFORM_KINDS:
            names = ", ".join(TRANSFORM_KINDS)
            raise ParamError("kind", f"{self.kind!r} is not one of {names}")
        if self.kind == "pca" and self.n_components is None:
            raise ParamError("n_components", "is needed for a PCA (the dimensions to keep)")
        if self.kind != "pca" and self.n_components is not None:
            raise ParamError("n_components", f"is for a PCA only, not for {self.kind!r}")
        if self.n_components is not None and self.n_components < 1:
            raise ParamError("n_components", f"must be at least 1, not {self.n_components}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_components(n_components: int, rows: int, dim: int) -> None:
    """A PCA of ``rows`` vectors of ``dim`` dimensions can keep 1 to min(rows fitted, dim)
    components; raises ParamError (a ValueError) saying so otherwise."""
    most = min(min(rows, MAX_FIT_ROWS), dim)
    if not 1 <= n_components <= most:
        raise ParamError(
            "n_components",
            f"must be between 1 and {most} (the smaller of the {min(rows, MAX_FIT_ROWS)} "
            f"vectors fitted and their {dim} dimensions), not {n_components}",
        )


@dataclass(frozen=True, eq=False)
class VectorTransform:
    """A fitted transform: ``apply(x)`` = normalise((x - mean) @ components.T), or
    normalise(x - mean) when ``components`` is None (kind "center"). ``mean`` is float32
    (dim_in,), ``components`` float32 (dim_out, dim_in) with the PCA whitening folded in;
    ``fitted_on``: the rows the fit used."""

    kind: str  # "center" | "pca"
    mean: np.ndarray
    components: np.ndarray | None = None
    params: dict[str, Any] = field(default_factory=dict)
    fitted_on: int = 0

    @classmethod
    def fit(
        cls, x: np.ndarray, kind: str, n_components: int | None = None, seed: int = 0
    ) -> VectorTransform:
        """Fit on the rows of x (raw vectors): their mean ("center"), or scikit-learn's
        whitened PCA of at most MAX_FIT_ROWS of them, sampled with ``seed`` ("pca")."""
        params = TransformParams(kind, n_components, seed)
        if kind == RAW:
            raise ParamError("kind", "'raw' is no transform: there is nothing to fit")
        if len(x) < 2:
            raise ParamError("rows", f"a transform is fitted on 2 vectors or more, not {len(x)}")
        if kind == "center":
            return cls("center", _mean(x), None, {}, len(x))
        assert params.n_components is not None
        check_components(params.n_components, len(x), x.shape[1])
        return _fit_pca(x, params.n_components, seed)

    @property
    def dim_in(self) -> int:
        return int(self.mean.shape[0])

    @property
    def dim_out(self) -> int:
        return self.dim_in if self.components is None else int(self.components.shape[0])

    def apply(self, x: np.ndarray, *, inplace: bool = False) -> np.ndarray:
        """float32 (len(x), dim_out), rows L2-normalised (a row equal to the mean stays zero).
        Works APPLY_ROWS at a time, in float32: 1M x 512 needs no float64 temporary.
        ``inplace``: a centring may overwrite x (a float32 array the caller gives up)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim_in:
            raise ValueError(f"expected rows of {self.dim_in} values, got shape {x.shape}")
        reuse = inplace and self.components is None and x.flags.writeable and x.flags.c_contiguous
        out = x if reuse else np.empty((len(x), self.dim_out), np.float32)
        for start in range(0, len(x), APPLY_ROWS):
            block = x[start : start + APPLY_ROWS] - self.mean
            if self.components is not None:
                block = block @ self.components.T
            out[start : start + APPLY_ROWS] = normalize(block, inplace=True)
        return out

    def describe(self) -> str:
        """'mean-centred' or 'PCA-whitened to 50 dims'."""
        if self.kind == "center":
            return "mean-centred"
        return f"PCA-whitened to {self.dim_out} dims"

    def fingerprint(self) -> str:
        """sha256 of the kind and the fitted arrays: two indexes built under the same
        fingerprint hold comparable vectors."""
        h = hashlib.sha256(self.kind.encode())
        h.update(np.ascontiguousarray(self.mean, "<f4").tobytes())
        if self.components is not None:
            h.update(np.ascontiguousarray(self.components, "<f4").tobytes())
        return h.hexdigest()


def prepare(x: np.ndarray, t: VectorTransform | None, *, inplace: bool = False) -> np.ndarray:
    """The rows the cosine is taken on: transformed by ``t`` and L2-normalised, or only
    normalised when there is no transform."""
    return normalize(x, inplace=inplace) if t is None else t.apply(x, inplace=inplace)


def fingerprint(t: VectorTransform | None) -> str:
    """The transform's fingerprint, RAW when there is none."""
    return RAW if t is None else t.fingerprint()


def describe(t: VectorTransform | None) -> str:
    """'raw cosine', 'mean-centred' or 'PCA-whitened to 50 dims'."""
    return "raw cosine" if t is None else t.describe()


def _mean(x: np.ndarray) -> np.ndarray:
    """The mean row, summed in float64 one chunk at a time (no float64 copy of x)."""
    total = np.zeros(x.shape[1], np.float64)
    for start in range(0, len(x), APPLY_ROWS):
        total += x[start : start + APPLY_ROWS].sum(axis=0, dtype=np.float64)
    return (total / len(x)).astype(np.float32)


def _fit_pca(x: np.ndarray, n_components: int, seed: int) -> VectorTransform:
    """scikit-learn's PCA(whiten=True) on a sample of rows, its whitening folded into the
    components: apply gives what PCA.transform gives, normalised."""
    from sklearn.decomposition import PCA  # scikit-learn loads in ~1 s: only when fitting

    rows = np.arange(len(x))
    if len(x) > MAX_FIT_ROWS:
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(len(x), size=MAX_FIT_ROWS, replace=False))
    sample = np.asarray(x[rows], dtype=np.float32)
    pca = PCA(n_components=n_components, whiten=True, random_state=seed).fit(sample)
    var = np.asarray(pca.explained_variance_, np.float64)
    scale = np.divide(1.0, np.sqrt(var), out=np.zeros_like(var), where=var > 0)
    components = (pca.components_ * scale[:, None]).astype(np.float32)
    params = {
        "n_components": n_components,
        "seed": seed,
        "explained_variance_ratio": round(float(np.sum(pca.explained_variance_ratio_)), 6),
    }
    return VectorTransform("pca", pca.mean_.astype(np.float32), components, params, len(rows))
