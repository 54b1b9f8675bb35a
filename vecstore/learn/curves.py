"""Learning curves: a score measured at several label counts, fitted a - b m^-c."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class CurveFit:
    """score(m) = a - b * m^(-c), the inverse power law of learning curves."""

    a: float
    b: float
    c: float
    rmse: float

    def predict(self, labels: float) -> float:
        """The fitted score at ``labels`` labels, clipped to [0, 1]."""
        return float(np.clip(self.a - self.b * labels ** (-self.c), 0.0, 1.0))

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, float] | None) -> CurveFit | None:
        return None if not d else cls(d["a"], d["b"], d["c"], d.get("rmse", 0.0))


def _power_law(x: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return a - b * np.power(x, -c)


def fit_learning_curve(
    labels: np.ndarray, scores: np.ndarray, spread: np.ndarray | None = None
) -> CurveFit | None:
    """Fit score(m) = a - b * m^(-c) to scores measured with m labels, each weighted by its
    spread over repeats (noisy small-m points count less); None when there are too few
    distinct points to fit."""
    from scipy.optimize import curve_fit

    m = np.asarray(labels, dtype=np.float64)
    y = np.asarray(scores, dtype=np.float64)
    if len(np.unique(m)) < 3:
        return None
    sigma = None if spread is None else np.asarray(spread, dtype=np.float64) + 0.005
    start = (min(1.0, y.max() + 0.02), max(y.max() - y.min(), 0.05), 0.5)
    try:
        (a, b, c), _ = curve_fit(
            _power_law, m, y, p0=start, sigma=sigma, bounds=([0, 0, 0.01], [1, 10, 3]), maxfev=20000
        )
    except (RuntimeError, ValueError):
        return None
    resid = y - _power_law(m, a, b, c)
    return CurveFit(float(a), float(b), float(c), float(np.sqrt(np.mean(resid**2))))
