"""The arrays the algorithms work on, read from the database."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import BadInput
from ..learn.knn import normalize

if TYPE_CHECKING:  # pragma: no cover
    from ..db import Database
    from ..db.models import Space


def space_matrix(db: Database, space: str | None) -> tuple[Space, np.ndarray, np.ndarray]:
    """(space, ids, L2-normalised vectors) of a space (the store's first when None)."""
    sp = db.spaces.get(space)
    ids, x = db.vectors.get(sp)
    if len(ids) == 0:
        raise BadInput(f"space {sp.name!r} has no vectors yet")
    return sp, ids, normalize(x, inplace=True)
