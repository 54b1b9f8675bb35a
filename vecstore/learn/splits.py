"""Which expert labels to hide when scoring on the expert labels themselves: random draws
with every class (the learning curve) and stratified, optionally grouped, folds."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def draw_with_every_class(
    labels: np.ndarray, classes: list[str], m: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(drawn, hidden) row indices of ``labels``: m rows drawn at random with at least one of
    each class (the first of each class drawn first), and the rest. m below the number of
    classes is refused."""
    if m < len(classes):
        raise ValueError(f"cannot draw {m} rows with one of each of {len(classes)} classes")
    first = [rng.choice(np.flatnonzero(labels == c)) for c in classes]
    rest = rng.permutation(np.setdiff1d(np.arange(len(labels)), first))
    drawn = np.concatenate([first, rest[: m - len(first)]]).astype(int)
    return drawn, np.setdiff1d(np.arange(len(labels)), drawn)


def cross_fit_folds(
    labels: np.ndarray, folds: int, seed: int, groups: np.ndarray | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(train_idx, test_idx) of a stratified K-fold in which every row is tested once; with
    ``groups`` (a patient id per row, say) scikit-learn's StratifiedGroupKFold keeps each
    group whole in one fold, so that no patient is both seen and scored. ``folds`` is capped
    by the smallest class (and by the number of groups)."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    y = np.asarray(labels).astype(str)
    k = min(folds, int(np.unique(y, return_counts=True)[1].min()))
    if groups is None:
        yield from StratifiedKFold(k, shuffle=True, random_state=seed).split(y, y)
        return
    g = np.asarray(groups).astype(str)
    k = min(k, len(np.unique(g)))
    yield from StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(y, y, g)
