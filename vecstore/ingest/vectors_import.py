"""Precomputed embeddings (from a GPU cluster, say) imported as a space of their own: the
file is validated whole first, then its rows stream in chunks, one transaction each, so an
interrupted import resumes where it stopped when run again."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..db.vectors import ImportCounts
from ..embedders import NAMES
from ..errors import BadInput
from ..progress import progress_bar
from ..results import VectorImport
from .vector_file import VectorFile

if TYPE_CHECKING:  # pragma: no cover
    from ..db import Database
    from ..db.models import Space


def import_vectors(
    db: Database, vector_file: VectorFile, space: str, *, progress: bool = False
) -> VectorImport:
    """Each path becomes an image (or finds the one it already is), each row its vector in
    ``space``; images that already have a vector there are skipped. The index is the
    caller's to build: ``index`` is None here and ``seconds`` counts the rows alone."""
    t0 = time.perf_counter()
    rows, dim = vector_file.validate()
    sp = _target_space(db, space, dim, vector_file)
    total, next_id = ImportCounts(), db.images.next_id()
    bar = progress_bar(rows, f"import {space}", progress)
    for _, paths, x in vector_file.chunks(dim):
        resolved = [vector_file.resolve(p) for p in paths]
        counts, next_id = db.vectors.import_rows(sp.id, resolved, x, next_id)
        total.added += counts.added
        total.reused += counts.reused
        total.skipped += counts.skipped
        bar.update(len(paths))
    bar.close()
    seconds = round(time.perf_counter() - t0, 2)
    return VectorImport(
        space=space,
        dim=dim,
        rows=rows,
        new_images=total.added,
        existing_images=total.reused,
        skipped_already_imported=total.skipped,
        seconds_rows=seconds,
        seconds=seconds,
        index=None,
    )


def _target_space(db: Database, name: str, dim: int, vector_file: VectorFile) -> Space:
    """The imported space ``name``: created with ``dim`` when new; an existing one must be an
    imported space of the same dimension."""
    sp = db.spaces.by_name(name)
    if sp is None:
        if name in NAMES:
            raise BadInput(
                f"{name!r} is a built-in space computed by vecstore; name the imported vectors "
                "after their model, e.g. --space clip-vit-b32"
            )
        return db.spaces.create_imported(name, dim, vector_file.path.name)
    if sp.model != "imported":
        raise BadInput(
            f"space {name!r} is computed by vecstore ({sp.model}); import into another space"
        )
    if sp.dim != dim:
        raise BadInput(f"space {name!r} has dimension {sp.dim}; {vector_file.path} has {dim}")
    return sp
