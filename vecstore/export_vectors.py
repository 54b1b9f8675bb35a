"""A space's vectors out as a Parquet file: one row per usable image with a vector in the space,
columns ``path`` (the image's path as stored: the first one seen), ``sha256``, ``image_id`` and
``vector`` (a list of float32, the stored vector as it is: not normalised, not transformed).
``vecstore import-vectors`` reads it back into another store bit for bit; pandas and pyarrow
read it as it is. The rows stream from the database a page at a time into a ParquetWriter,
so a million vectors never sit in memory together, and the file is written as every output of
vecstore is (vecstore.files.write_atomically): whole or not at all."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, BinaryIO

import numpy as np

from .errors import BadInput
from .files import write_atomically
from .progress import progress_bar
from .results import VectorExport

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa
    from sqlalchemy import Row

    from .db import Database
    from .db.models import Space

# floats per chunk: 16 MiB of vectors, rows per chunk = this // dim (the peak memory of an
# export, about 150 MB over the store's own at 512-d, does not grow with the space)
CHUNK_VALUES = 1 << 22


def export_vectors(
    db: Database, space: str, out: str | os.PathLike[str], *, progress: bool = False
) -> VectorExport:
    """Write the vectors of ``space`` to ``out`` as Parquet (see the module); raises
    UnknownSpace for a space the store does not have and BadInput for an output it cannot
    write (a folder, a full disk)."""
    t0 = time.perf_counter()
    sp = db.spaces.get(space)
    written = 0

    def write(f: IO[str]) -> None:
        nonlocal written
        with progress_bar(db.vectors.count(sp), f"export {sp.name}", progress) as bar:
            written = _write_parquet(_binary(f), db, sp, bar)

    path = write_atomically(out, write)
    return VectorExport(
        path=str(path),
        space=sp.name,
        dim=sp.dim,
        rows=written,
        seconds=round(time.perf_counter() - t0, 2),
    )


def _binary(f: IO[str]) -> BinaryIO:
    """The byte stream under the text file that write_atomically hands over (Parquet is
    bytes; nothing goes through the text layer, so nothing waits in it)."""
    raw = getattr(f, "buffer", None)
    if raw is None:
        raise BadInput("cannot write Parquet to a text-only stream; give a file to -o")
    return raw


def _schema(sp: Space) -> pa.Schema:
    """The file's columns, with the space's name, model and dimension as its metadata."""
    import pyarrow as pa

    fields = [
        ("path", pa.string()),
        ("sha256", pa.string()),
        ("image_id", pa.int64()),
        ("vector", pa.list_(pa.float32())),
    ]
    meta = {"vecstore.space": sp.name, "vecstore.model": sp.model, "vecstore.dim": str(sp.dim)}
    return pa.schema(fields, metadata=meta)


def _write_parquet(sink: BinaryIO, db: Database, sp: Space, bar) -> int:
    """Every chunk of the space into ``sink``, a row group each; returns the rows written."""
    import pyarrow.parquet as pq

    sch, rows = _schema(sp), 0
    # no dictionary encoding: paths are unique and float values rarely repeat
    with pq.ParquetWriter(sink, sch, use_dictionary=False) as writer:
        for page, ids, x in _chunks(db, sp):
            writer.write_batch(_batch(sch, page, ids, x))
            rows += len(ids)
            bar.update(len(ids))
    return rows


def _chunks(db: Database, sp: Space) -> Iterator[tuple[list[Row], np.ndarray, np.ndarray]]:
    """(rows (id, path, sha256), ids, vectors) of the usable images with a vector in ``sp``,
    in id order, a page of usable images (CHUNK_VALUES floats' worth) at a time; a page whose
    images have no vector in the space gives nothing."""
    rows, after = max(1, CHUNK_VALUES // max(sp.dim, 1)), 0
    while page := db.images.export_rows(after, limit=rows):
        after = page[-1].id
        ids, x = db.vectors.get(sp, [r.id for r in page])
        if len(ids):
            have = set(ids.tolist())
            yield [r for r in page if r.id in have], ids, x


def _batch(sch: pa.Schema, page: list[Row], ids: np.ndarray, x: np.ndarray) -> pa.RecordBatch:
    """One chunk as a record batch of ``sch``: the vectors' float32 values go in as they are."""
    import pyarrow as pa

    n, dim = x.shape  # n * dim <= CHUNK_VALUES (or one row): int32 offsets hold it
    offsets = pa.array(np.arange(0, (n + 1) * dim, dim, dtype=np.int32), pa.int32())
    vectors = pa.ListArray.from_arrays(offsets, pa.array(x.reshape(-1), pa.float32()))
    columns = [
        pa.array([r.path for r in page], pa.string()),
        pa.array([r.sha256 for r in page], pa.string()),
        pa.array(ids, pa.int64()),
        vectors,
    ]
    return pa.RecordBatch.from_arrays(columns, schema=sch)
