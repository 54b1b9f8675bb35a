"""The arrays the algorithms work on, read from the database: a space's vectors as the cosine
sees them (through the space's transform, when it has one)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import BadInput
from ..learn.transform import prepare

if TYPE_CHECKING:  # pragma: no cover
    from ..db import Database
    from ..db.models import Space


def space_matrix(db: Database, space: str | None) -> tuple[Space, np.ndarray, np.ndarray]:
    """(space, ids, vectors) of a space (the store's first when None): the raw vectors put
    through the space's transform (mean-centring, PCA whitening; none: raw cosine), then
    L2-normalised, so that an inner product is the cosine every workflow compares by."""
    sp = db.spaces.get(space)
    ids, x = db.vectors.get(sp)
    if len(ids) == 0:
        raise BadInput(f"space {sp.name!r} has no vectors yet")
    return sp, ids, prepare(x, db.spaces.transform(sp.id), inplace=True)
