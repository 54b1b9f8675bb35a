"""A recall promise that holds: the threshold on p(positive) under which, with a stated
probability, at most a share 1 - target of the positives fall, from out-of-fold scores of the
labeled positives. Distribution-free (order statistics): the share of positives scoring below
the k-th lowest of n exchangeable scores follows Beta(k, n - k + 1), so

    P(true recall >= target) = P(Binomial(n, 1 - target) >= k).

The threshold is the k-th lowest score for the largest k that keeps this at or above the
confidence asked for; with too few positives even the lowest score cannot, and the promise is
declined with the number of positives that would make it possible. It assumes the labeled
positives are drawn like the unlabeled ones (labels chosen at random, not actively)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class RecallPromise:
    target: float  # recall of the positive class to reach
    confidence: float  # the probability asked for that the true recall reaches it
    positives: int  # out-of-fold positive scores the promise rests on
    threshold: float | None  # p(positive) >= threshold: called positive; None: declined
    rank: int | None  # the threshold is the rank-th lowest positive score
    holds_with: float  # P(true recall >= target) at that threshold (at rank 1 when declined)
    positives_needed: int  # fewest positives for which any promise is possible

    @property
    def declined(self) -> bool:
        return self.threshold is None

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def positives_needed(target: float, confidence: float) -> int:
    """Fewest positive scores for which the lowest one is a threshold reaching ``target``
    recall with probability ``confidence``: 1 - target**n >= confidence."""
    _check(target, confidence)
    return max(1, math.ceil(math.log1p(-confidence) / math.log(target) - 1e-12))


def recall_promise(pos_scores: np.ndarray, target: float, confidence: float) -> RecallPromise:
    """The highest threshold whose recall reaches ``target`` with probability at least
    ``confidence``, from the out-of-fold scores of the labeled positives."""
    _check(target, confidence)
    s = np.sort(np.asarray(pos_scores, dtype=float))
    n = len(s)
    ks = np.arange(1, n + 1)
    from scipy.stats import binom  # on first use: scipy.stats takes ~0.5 s to import

    holds = binom.sf(ks - 1, n, 1 - target)  # P(Binomial(n, 1 - target) >= k), k = 1..n
    ok = np.flatnonzero(holds >= confidence)
    needed = positives_needed(target, confidence)
    if len(ok) == 0:
        at_one = float(holds[0]) if n else 0.0
        return RecallPromise(target, confidence, n, None, None, at_one, needed)
    j = int(ok[-1])  # holds decreases with k: the last k that still holds
    return RecallPromise(target, confidence, n, float(s[j]), j + 1, float(holds[j]), needed)


def _check(target: float, confidence: float) -> None:
    if not 0 < target < 1:
        raise ValueError(f"target recall must be between 0 and 1 (exclusive), not {target}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), not {confidence}")
