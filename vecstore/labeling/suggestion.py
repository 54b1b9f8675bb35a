"""Which images to label next, with why each was picked (see vecstore.learn.active), recorded
as a run so that their labels are known to be chosen by vecstore."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..db.runs import PICKED, SUGGEST
from ..errors import BadInput
from ..files import write_csv
from ..learn.active import choose_to_label
from ..params import PropagationParams
from ..results import SUGGESTION_COLUMNS, Suggestion
from .data import space_matrix
from .propagation import spread

if TYPE_CHECKING:  # pragma: no cover
    from ..db import Database


def suggest(
    db: Database,
    n: int,
    space: str | None,
    *,
    seed: int = 0,
    params: PropagationParams | None = None,
    who: str | None = None,
) -> list[Suggestion]:
    """The n images whose labels would help most. Once the expert labels cover two classes,
    the current pseudo-labels (their margins) steer the choice. Recorded as a ``suggest``
    run listing the picked image ids: their labels, whatever file brings them, are then
    known to be chosen by vecstore ("suggested"), not drawn at random; ``who`` asked for
    them (recorded with the run when given)."""
    if n < 1:
        raise BadInput("-n must be at least 1")
    params = params or PropagationParams()
    sp, ids, x = space_matrix(db, space)
    asked = {"n": n, "seed": seed, **params.to_dict(), **({"who": who} if who else {})}
    with db.runs.record(SUGGEST, sp.name, asked) as run:
        seeds = db.labels.all()
        picks = _pick(db, sp.name, ids, x, seeds, n, seed, params)
        run.stats = {
            PICKED: [p.image_id for p in picks],
            "expert_labels": len(seeds),
            "reasons": dict(Counter(p.reason for p in picks)),
        }
    return picks


def _pick(
    db: Database,
    space: str,
    ids: np.ndarray,
    x: np.ndarray,
    seeds: dict[int, str],
    n: int,
    seed: int,
    params: PropagationParams,
) -> list[Suggestion]:
    row_of = {int(i): r for r, i in enumerate(ids)}
    labeled = np.array(sorted(row_of[i] for i in seeds if i in row_of), dtype=np.int64)
    margin = predicted = confidence = None
    if len({seeds[int(ids[r])] for r in labeled}) >= 2:
        margin, predicted, confidence = _pseudo_labels(x, ids, seeds, params)
    path_of = db.images.paths()
    out = []
    for r, reason, cluster in choose_to_label(x, labeled, n, margin=margin, seed=seed):
        iid = int(ids[r])
        out.append(
            Suggestion(
                image_id=iid,
                path=path_of.get(iid),
                reason=reason,
                pseudo_label=predicted[r] if predicted else None,
                confidence=round(float(confidence[r]), 6) if confidence is not None else None,
                margin=round(float(margin[r]), 6) if margin is not None else None,
                cluster=cluster,
                space=space,
            )
        )
    return out


def _pseudo_labels(
    x: np.ndarray, ids: np.ndarray, seeds: dict[int, str], params: PropagationParams
) -> tuple[np.ndarray, list[str | None], np.ndarray]:
    """(margin, pseudo-label, confidence) of every row, spread from the expert labels."""
    classes, lp = spread(x, ids, seeds, params)
    p = np.sort(lp.label_distributions_, axis=1)
    predicted = [classes[t] if t >= 0 else None for t in lp.transduction_]
    return p[:, -1] - p[:, -2], predicted, lp.confidence_


def write_suggestions(out: str | os.PathLike[str], picks: list[Suggestion]) -> Path:
    """The suggestions as a CSV with an empty `label` column to fill, for `labels import`."""
    import pandas as pd

    frame = pd.DataFrame([p.to_dict() for p in picks], columns=SUGGESTION_COLUMNS)
    return write_csv(out, frame)
