"""Embedding spaces: what made their vectors, the index settings and stats of each, and the
vector transform (mean-centring, PCA whitening) each may apply before the cosine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from ..errors import UnknownSpace, VecstoreError
from ..learn.transform import VectorTransform
from .models import Space, SpaceTransform, Vector, utcnow

if TYPE_CHECKING:  # pragma: no cover
    from ..embedders import SpaceInfo
    from .connections import Connections


class SpaceRepo:
    def __init__(self, db: Connections) -> None:
        self.db = db
        self._cache: tuple[int, list[Space]] | None = None

    def all(self) -> list[Space]:
        """Every space, in creation order; cached until the database changes (a query is a
        few milliseconds, and this is on its path)."""
        version = self.db.data_version()
        if self._cache is None or self._cache[0] != version:
            with self.db.session() as s:
                self._cache = (version, list(s.scalars(select(Space).order_by(Space.id))))
        return list(self._cache[1])

    def get(self, name: str | None) -> Space:
        """The named space, or the store's first space when ``name`` is None."""
        spaces = self.all()
        if not spaces:
            raise UnknownSpace(
                "this store has no embedding space yet; run `vecstore ingest DIR --space NAME` "
                "or `vecstore embed --space NAME`"
            )
        if name is None:
            return spaces[0]
        for sp in spaces:
            if sp.name == name:
                return sp
        raise UnknownSpace(
            f"space {name!r} is not in this store (it has: {', '.join(s.name for s in spaces)}); "
            f"add it with `vecstore embed --space {name}`"
        )

    def by_name(self, name: str) -> Space | None:
        with self.db.session() as s:
            return s.scalar(select(Space).where(Space.name == name))

    def ensure(self, s: Session, info: SpaceInfo) -> Space:
        """The space ``info`` describes, created in session ``s`` when it is new."""
        sp = s.scalar(select(Space).where(Space.name == info.name))
        if sp is None:
            sp = Space(
                name=info.name,
                model=info.model,
                layer=info.layer,
                dim=info.dim,
                preprocessing=info.preprocessing,
                weights=info.weights,
                weights_random=info.weights_random,
                weights_sha256=info.weights_sha256,
                precision=info.precision,
            )
            s.add(sp)
            s.flush()
        return sp

    def create_imported(self, name: str, dim: int, source: str) -> Space:
        """A space for vectors computed elsewhere and imported from the file ``source``."""
        with self.db.session() as s:
            sp = Space(
                name=name,
                model="imported",
                layer=None,
                dim=dim,
                preprocessing=f"precomputed, imported from {source}",
                weights="unknown (precomputed vectors)",
                weights_random=False,
            )
            s.add(sp)
            s.commit()
            return sp

    def set_index_settings(
        self, space_id: int, *, factory: str | None, memory_budget: int | None
    ) -> Space:
        """Keep the user's index choice for later builds: a factory string ("auto" goes back
        to the automatic choice) and a memory budget in bytes; None leaves one as it is."""
        with self.db.session() as s:
            row = s.get(Space, space_id)
            assert row is not None
            if factory is not None:
                row.index_factory = None if factory == "auto" else factory
            if memory_budget is not None:
                row.memory_budget = memory_budget
            s.commit()
            return row

    def record_index(self, space_id: int, factory: str, stats: dict[str, Any]) -> None:
        """What the last index build made (factory, tuned parameters, measured recall)."""
        with self.db.session() as s:
            row = s.get(Space, space_id)
            assert row is not None
            row.index_type, row.index_stats = factory, stats
            s.commit()

    def vector_counts(self) -> dict[int, int]:
        """space id -> number of vectors."""
        with self.db.session() as s:
            q = select(Vector.space_id, func.count()).group_by(Vector.space_id)
            return dict(s.execute(q).all())

    # ---- the vector transform of a space (no row: raw cosine) ---------------------------------
    def transform(self, space_id: int) -> VectorTransform | None:
        """The space's fitted transform, or None (raw cosine)."""
        with self.db.session() as s:
            row = s.get(SpaceTransform, space_id)
            if row is None:
                return None
            space = s.get(Space, space_id)
            return _from_row(row, space.name if space else str(space_id))

    def set_transform(self, space_id: int, t: VectorTransform) -> VectorTransform:
        """Keep ``t`` as the space's transform, replacing the one it had."""
        with self.db.session() as s:
            s.merge(
                SpaceTransform(
                    space_id=space_id,
                    kind=t.kind,
                    params=t.params,
                    dim_in=t.dim_in,
                    dim_out=t.dim_out,
                    mean=np.ascontiguousarray(t.mean, "<f4").tobytes(),
                    components=None
                    if t.components is None
                    else np.ascontiguousarray(t.components, "<f4").tobytes(),
                    fitted_on=t.fitted_on,
                    created_at=utcnow(),
                )
            )
            s.commit()
        return t

    def clear_transform(self, space_id: int) -> bool:
        """Back to the raw cosine; False when the space had no transform."""
        with self.db.session() as s:
            gone = s.execute(delete(SpaceTransform).where(SpaceTransform.space_id == space_id))
            s.commit()
            return bool(gone.rowcount)


def _from_row(row: SpaceTransform, space: str) -> VectorTransform:
    """The transform a row keeps, its kind and arrays checked against what it records."""
    mean = np.frombuffer(row.mean, dtype="<f4")
    comps = None if row.components is None else np.frombuffer(row.components, dtype="<f4")
    if row.kind == "center":
        sound = comps is None and row.dim_out == row.dim_in
    else:
        sound = row.kind == "pca" and comps is not None and len(comps) == row.dim_out * row.dim_in
    if not sound or len(mean) != row.dim_in:
        raise VecstoreError(
            f"the vector transform of space {space!r} is damaged (a {row.kind!r} whose arrays "
            f"do not match the {row.dim_in} -> {row.dim_out} dimensions it records): run "
            f"`vecstore transform --space {space} --raw`, then fit it again"
        )
    components = None if comps is None else comps.reshape(row.dim_out, row.dim_in)
    return VectorTransform(row.kind, mean, components, dict(row.params or {}), row.fitted_on)
