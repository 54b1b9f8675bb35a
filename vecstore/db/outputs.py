"""What runs produce per image: the cluster of each image in a clustering run, the pseudo-label
(with its class distribution) of each image in a propagation run."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Row, insert, select

from .models import ClusterAssignment, Prediction

if TYPE_CHECKING:  # pragma: no cover
    from .connections import Connections


class OutputRepo:
    def __init__(self, db: Connections) -> None:
        self.db = db

    def save_clusters(self, run_id: int, ids: np.ndarray, clusters: np.ndarray) -> None:
        rows = [
            {"run_id": run_id, "image_id": int(i), "cluster": int(c)} for i, c in zip(ids, clusters)
        ]
        with self.db.session() as s:
            s.execute(insert(ClusterAssignment), rows)
            s.commit()

    def clusters(self, run_id: int) -> dict[int, int]:
        """image id -> cluster in a clustering run."""
        q = select(ClusterAssignment.image_id, ClusterAssignment.cluster).where(
            ClusterAssignment.run_id == run_id
        )
        with self.db.session() as s:
            return dict(s.execute(q).all())

    def save_predictions(self, chunks: Iterable[list[dict[str, Any]]]) -> None:
        """Write a propagation's prediction rows, chunk by chunk, in one transaction."""
        with self.db.session() as s:
            for rows in chunks:
                s.execute(insert(Prediction), rows)
            s.commit()

    def predictions(self, run_id: int) -> dict[int, Row]:
        """image id -> pseudo-label of a propagation run: rows with the Prediction's
        columns as attributes (not ORM objects: a review table of 100k images read them
        all, and building an object per row was half of its time)."""
        columns = [getattr(Prediction, c.key) for c in Prediction.__table__.columns]
        with self.db.session() as s:
            q = select(*columns).where(Prediction.run_id == run_id)
            return {p.image_id: p for p in s.execute(q)}
