"""Readers for precomputed embeddings: a .npy matrix with a paths file (one path per line, in
the rows' order), or a .parquet file with a path column and a vector column (a list of
floats per row). Both stream in chunks; ``validate`` reads everything once before anything is
written, so a bad file is refused whole, with the line or row that is wrong."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BadInput

CHUNK = 50_000


@dataclass
class VectorFile:
    path: Path
    paths_file: Path | None = None
    path_column: str = "path"
    vector_column: str = "vector"
    base: Path | None = None  # relative paths are taken from here (default: the current folder)

    # ---- shape ------------------------------------------------------------------------------
    def open(self) -> tuple[int, int]:
        """(rows, dim), after checking that the file and its columns are what they should be."""
        if not self.path.exists():
            raise BadInput(f"vector file not found: {self.path}")
        suffix = self.path.suffix.lower()
        if suffix == ".npy":
            if self.paths_file is None:
                raise BadInput(
                    f"{self.path} holds only vectors: give the image paths with --paths "
                    "FILE (one path per line, in the same order)"
                )
            if not self.paths_file.exists():
                raise BadInput(f"paths file not found: {self.paths_file}")
            try:
                x = np.load(self.path, mmap_mode="r")
            except (ValueError, OSError) as exc:
                raise BadInput(f"cannot read {self.path} as a .npy array: {exc}") from None
            if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
                raise BadInput(
                    f"{self.path} holds a {x.dtype} array of shape {x.shape}; expected "
                    "a 2-D float array (one row per image)"
                )
            self._npy = x
            return x.shape[0], x.shape[1]
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            try:
                self._pq = pq.ParquetFile(self.path)
            except Exception as exc:  # pyarrow raises several kinds
                raise BadInput(f"cannot read {self.path} as parquet: {exc}") from None
            names = self._pq.schema_arrow.names
            missing = [c for c in (self.path_column, self.vector_column) if c not in names]
            if missing:
                raise BadInput(
                    f"{self.path} has no column {', '.join(map(repr, missing))} (its columns: "
                    f"{', '.join(names)}); name them with --path-column / --vector-column"
                )
            first = next(self._pq.iter_batches(batch_size=1, columns=[self.vector_column]), None)
            dim = (
                len(first.column(0)[0].as_py() or []) if first is not None and first.num_rows else 0
            )
            return self._pq.metadata.num_rows, dim
        raise BadInput(f"{self.path}: expected a .npy file (with --paths) or a .parquet file")

    # ---- chunks -----------------------------------------------------------------------------
    def resolve(self, p: str) -> str:
        p = os.path.expanduser(p)
        if not os.path.isabs(p) and self.base is not None:
            p = os.path.join(self.base, p)
        return os.path.abspath(p)

    def chunks(self, dim: int) -> Iterator[tuple[int, list[str], np.ndarray]]:
        """(first row number, absolute paths, float32 vectors) per chunk."""
        if hasattr(self, "_npy"):
            with open(self.paths_file, encoding="utf-8") as f:
                start = 0
                while True:
                    lines = [ln.rstrip("\r\n") for _, ln in zip(range(CHUNK), f)]
                    if not lines:
                        break
                    x = np.asarray(self._npy[start : start + len(lines)], dtype=np.float32)
                    yield start, lines, x
                    start += len(lines)
            return
        start = 0
        for batch in self._pq.iter_batches(
            batch_size=CHUNK, columns=[self.path_column, self.vector_column]
        ):
            paths = batch.column(0).to_pylist()
            col = batch.column(1)
            lengths = (
                col.value_lengths().to_numpy(zero_copy_only=False)
                if hasattr(col, "value_lengths")
                else None
            )
            if lengths is None or (lengths != dim).any():
                bad = start + (int(np.flatnonzero(lengths != dim)[0]) if lengths is not None else 0)
                raise BadInput(
                    f"{self.path}: row {bad + 1} has a vector of length "
                    f"{int(lengths[bad - start]) if lengths is not None else '?'}, expected {dim} "
                    f"(column {self.vector_column!r} must be a list of floats)"
                )
            x = (
                col.flatten()
                .to_numpy(zero_copy_only=False)
                .astype(np.float32, copy=False)
                .reshape(-1, dim)
            )
            yield start, paths, x
            start += len(paths)

    def validate(self) -> tuple[int, int]:
        """Read it all once: same number of paths and vectors, no empty or repeated path, only
        finite numbers. Returns (rows, dim); raises BadInput naming the first bad line/row."""
        rows, dim = self.open()
        if dim == 0:
            raise BadInput(f"{self.path} holds no vectors")
        seen: dict[str, int] = {}
        n = 0
        for start, paths, x in self.chunks(dim):
            if len(paths) != len(x):
                raise BadInput(
                    f"{self.paths_file} has more paths than {self.path} has rows ({len(x) + start})"
                )
            bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
            if len(bad):
                raise BadInput(
                    f"{self.path}: row {start + bad[0] + 1} holds NaN or infinite values"
                )
            for j, p in enumerate(paths):
                if not p:
                    raise BadInput(
                        f"{self.paths_file or self.path}: line {start + j + 1} has an empty path"
                    )
                a = self.resolve(p)
                if a in seen:
                    raise BadInput(
                        f"{self.paths_file or self.path}: line {start + j + 1} repeats the path "
                        f"of line {seen[a]} ({p}); each image once"
                    )
                seen[a] = start + j + 1
            n += len(paths)
        if n != rows:
            raise BadInput(f"{self.paths_file} has {n} paths but {self.path} has {rows} rows")
        return rows, dim
