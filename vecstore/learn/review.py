"""Which pseudo-labels a person should review: the least sure ones, as many as it takes for
the others to reach a target accuracy, calibrated on out-of-fold scores.

Sureness is the margin to the decision applied: p1 - p2 for the most probable class, or, for a
binary task decided by a threshold t on p(positive), 2 |p(positive) - t| (the same number when
t = 0.5). A fixed cut on that margin (or on an entropy confidence) means nothing across tasks:
with two classes propagation's distributions sit near 0.5 and any fixed cut flags nearly every
image. So the margin is turned into its rank among the pseudo-labels of the same propagation
(0 = least sure), which does not depend on how spread out the distributions are, and the chance
that a pseudo-label is right is fitted against that rank on the expert labels scored
out-of-fold twice with scikit-learn: by isotonic regression (more sure is never less often
right; free of shape but it overfits a handful of errors) and by Platt scaling (a
two-parameter logistic regression: smooth, but its shape can be wrong). Each was optimistic
alone on some draws (isotonic promised 0.97 where the truth gave 0.94; Platt 0.97 for 0.964),
so the expected accuracy is the lower of the two. The share flagged is the smallest whose
unflagged remainder is expected to reach the target.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

STEPS = 100  # flagged shares considered: 0, 1 %, ..., 99 %
PLATT_C = 100.0  # barely regularised: the rank is one feature in [0, 1]


@dataclass
class ReviewCalibration:
    """How many pseudo-labels to flag, least sure first, for the rest to reach ``target``.

    ``flag_share`` None: no share short of everything reaches it (review everything).
    ``curve``: (share flagged, expected accuracy of the unflagged), every 5 %."""

    target: float
    flag_share: float | None
    expected_accuracy: float | None  # of the unflagged at flag_share
    accuracy_unflagged_none: float  # expected accuracy when nothing is flagged
    scored: int  # out-of-fold (or truth-scored) pseudo-labels it was fitted on
    curve: list[tuple[float, float]]

    def to_dict(self) -> dict:
        return asdict(self)


def decision_margin(
    p: np.ndarray, pos_j: int | None = None, threshold: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(class index decided, margin to that decision) per row of the distributions ``p``;
    -1 and 0 for a row with no probability mass. With ``pos_j`` and ``threshold`` (two
    classes only) the positive class is decided when p[:, pos_j] >= threshold."""
    p = np.asarray(p, dtype=np.float64)
    empty = p.sum(axis=1) <= 0
    if threshold is not None and pos_j is not None and p.shape[1] == 2:
        pos = p[:, pos_j] >= threshold
        decided = np.where(pos, pos_j, 1 - pos_j)
        margin = 2 * np.abs(p[:, pos_j] - threshold)
    else:
        decided = p.argmax(axis=1)
        top = np.sort(p, axis=1)
        margin = top[:, -1] - (top[:, -2] if p.shape[1] > 1 else 0.0)
    return np.where(empty, -1, decided), np.where(empty, 0.0, margin)


def rank_within(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The mid-rank of each value among ``reference`` as a share in [0, 1]: the share of the
    reference below it, plus half the share equal to it."""
    ref = np.sort(np.asarray(reference, dtype=np.float64))
    if not len(ref):
        return np.full(len(values), 0.5)
    lo = np.searchsorted(ref, values, side="left")
    hi = np.searchsorted(ref, values, side="right")
    return (lo + hi) / (2.0 * len(ref))


def calibrate_review(rank: np.ndarray, correct: np.ndarray, target: float) -> ReviewCalibration:
    """The share to flag, from out-of-fold pseudo-labels: ``rank`` of each one's margin among
    its propagation's pseudo-labels (see :func:`rank_within`) and whether it was ``correct``."""
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    rank = np.asarray(rank, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    grid = (np.arange(STEPS) + 0.5) / STEPS  # the centre of each 1 % slice of pseudo-labels
    if len(np.unique(rank)) < 2 or len(np.unique(correct)) < 2:
        acc = np.full(STEPS, correct.mean() if len(correct) else 0.0)
    else:
        platt = LogisticRegression(C=PLATT_C).fit(rank[:, None], correct.astype(int))
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(rank, correct)
        acc = np.minimum(platt.predict_proba(grid[:, None])[:, 1], iso.predict(grid))
    # flagging the first i slices leaves slices i.., whose expected accuracy is their mean
    tail = np.cumsum(acc[::-1])[::-1] / np.arange(STEPS, 0, -1)
    reach = np.flatnonzero(tail >= target - 1e-12)
    share = float(reach[0] / STEPS) if len(reach) else None
    return ReviewCalibration(
        target=target,
        flag_share=share,
        expected_accuracy=float(tail[reach[0]]) if len(reach) else None,
        accuracy_unflagged_none=float(tail[0]),
        scored=len(rank),
        curve=[(i / STEPS, round(float(tail[i]), 6)) for i in range(0, STEPS, 5)],
    )


def flagged(margin: np.ndarray, share: float | None) -> np.ndarray:
    """Which of these pseudo-labels (their margins) to flag: the ``share`` least sure (all of
    them when ``share`` is None), ties at the cut flagged too."""
    margin = np.asarray(margin, dtype=np.float64)
    if share is None:
        return np.ones(len(margin), bool)
    if share <= 0 or not len(margin):
        return np.zeros(len(margin), bool)
    return rank_within(margin, margin) < share


__all__ = [
    "ReviewCalibration",
    "calibrate_review",
    "decision_margin",
    "flagged",
    "rank_within",
]
