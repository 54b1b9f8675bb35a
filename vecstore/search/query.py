"""Similar images: the k nearest neighbours (cosine, after the space's vector transform when it
has one) of a stored image, by id or path, or of an outside file embedded with the space's
model."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from .. import dicom
from ..errors import BadInput, EmbedError, UnknownImage
from ..imagefile import open_image_file, sha256_image_file
from ..results import Hit, QueryResult

if TYPE_CHECKING:  # pragma: no cover
    from ..db import Database
    from ..db.models import Space
    from ..embedders import Embedder
    from .cache import IndexCache


def query(
    db: Database,
    indexes: IndexCache,
    space_name: str | None,
    *,
    path: str | None,
    image_id: int | None,
    k: int,
    embedder: Callable[[str], Embedder],
    where: Sequence[tuple[str, str]] = (),
) -> QueryResult:
    """The k images most similar to a stored image (``image_id``, or ``path`` of a stored
    file: itself left out) or to an outside file (``path``, embedded by the space's
    ``embedder(name)``), in the space named (the store's first when None); with ``where``,
    among the images whose metadata has each (column, value) only."""
    if (path is None) == (image_id is None):
        raise BadInput("give either an image path or --id, not both")
    if k < 1:
        raise BadInput("-k must be at least 1")
    space = db.spaces.get(space_name)
    if image_id is not None:
        if not db.images.exists(image_id):
            raise UnknownImage(f"no image with id {image_id} in this store (see `vecstore info`)")
        query_id, desc = image_id, f"id {image_id}"
    else:
        assert path is not None
        query_id, desc = _stored_image(db, path), os.path.abspath(path)
    qv = _query_vector(db, space, query_id, path, embedder)
    wanted = k + (1 if query_id is not None else 0)
    among = _among(db, where) if where else None
    if among is None:
        sims, ids = indexes.search(space, qv, wanted)
    else:
        sims, ids = indexes.search_among(space, qv, wanted, among)
    found = [(int(i), float(d)) for i, d in zip(ids[0], sims[0]) if i >= 0 and i != query_id][:k]
    rows = db.images.paths_and_labels([i for i, _ in found])
    hits = [
        Hit(
            rank=r + 1,
            id=i,
            path=rows.get(i, ("?", None))[0],
            similarity=sim,
            label=rows.get(i, ("?", None))[1],
        )
        for r, (i, sim) in enumerate(found)
    ]
    return QueryResult(
        space.name,
        space.weights,
        space.weights_random,
        desc,
        query_id,
        hits,
        where=tuple(where),
        selected=None if among is None else len(among),
    )


def _among(db: Database, where: Sequence[tuple[str, str]]) -> np.ndarray:
    """The images a metadata filter selects; a column the store has not is refused (looked
    for when none is selected: a column it has not selects none)."""
    ids = db.images.ids_where(where)
    if not len(ids):
        db.images.metadata_names([column for column, _ in where])
    return ids


def _stored_image(db: Database, path: str) -> int | None:
    """The id of the usable stored image at ``path`` (a file's, or a frame's: FILE#frame=N)
    or with the same bytes, else None."""
    if not dicom.file_exists(path):
        raise BadInput(f"query image not found: {path}")
    img = db.images.by_path(path)
    if img is None:  # same bytes under another path count as the same image
        try:
            sha = sha256_image_file(path)  # a regular file only: a FIFO or /dev/zero never ends
        except EmbedError as exc:
            raise BadInput(f"cannot read query image {path}: {exc}") from exc
        img = db.images.by_sha(sha)
    return img.id if img is not None and img.status == "ok" else None


def _query_vector(
    db: Database,
    space: Space,
    query_id: int | None,
    path: str | None,
    embedder: Callable[[str], Embedder],
) -> np.ndarray:
    """(1, dim): the stored vector of ``query_id``, or the embedding of the file ``path``
    (raw: the index's cache puts it through the space's transform)."""
    if query_id is not None:
        v = db.vectors.one(space, query_id)
        if v is None:
            raise UnknownImage(
                f"image {query_id} has no vector in space {space.name!r} "
                f"(failed or not embedded yet: `vecstore embed --space {space.name}`)"
            )
        return v
    model = embedder(space.name)
    try:
        return model.embed_image(open_image_file(path))[None, :]
    except EmbedError as exc:
        raise BadInput(f"cannot use {path} as a query: {exc}") from exc
