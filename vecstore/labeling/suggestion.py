"""Which images to label next, with why each was picked (see vecstore.learn.active)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

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
) -> list[Suggestion]:
    """The n images whose labels would help most. Once the expert labels cover two classes,
    the current pseudo-labels (their margins) steer the choice."""
    if n < 1:
        raise BadInput("-n must be at least 1")
    sp, ids, x = space_matrix(db, space)
    seeds = db.labels.all()
    row_of = {int(i): r for r, i in enumerate(ids)}
    labeled = np.array(sorted(row_of[i] for i in seeds if i in row_of), dtype=np.int64)
    margin = predicted = confidence = None
    if len({seeds[int(ids[r])] for r in labeled}) >= 2:
        classes, lp = spread(x, ids, seeds, params or PropagationParams())
        p = np.sort(lp.label_distributions_, axis=1)
        margin = p[:, -1] - p[:, -2]
        predicted = [classes[t] if t >= 0 else None for t in lp.transduction_]
        confidence = lp.confidence_
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
                space=sp.name,
            )
        )
    return out


def write_suggestions(out: str | os.PathLike[str], picks: list[Suggestion]) -> Path:
    """The suggestions as a CSV with an empty `label` column to fill, for `labels import`."""
    import pandas as pd

    frame = pd.DataFrame([p.to_dict() for p in picks], columns=SUGGESTION_COLUMNS)
    return write_csv(out, frame)
