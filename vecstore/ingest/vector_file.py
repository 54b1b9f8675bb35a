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
            return self._open_npy()
        if suffix == ".parquet":
            return self._open_parquet()
        raise BadInput(f"{self.path}: expected a .npy file (with --paths) or a .parquet file")

    def _open_npy(self) -> tuple[int, int]:
        if self.paths_file is None:
            raise BadInput(
                f"{self.path} holds only vectors: give the image paths with --paths "
                "FILE (one path per line, in the same order)"
            )
        if not self.paths_file.exists():
            raise BadInput(f"paths file not found: {self.paths_file}")
        if not self.paths_file.is_file():
            raise BadInput(
                f"--paths {self.paths_file} is a folder, not a file: give a text file with "
                "one image path per line, in the rows' order"
            )
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

    def _open_parquet(self) -> tuple[int, int]:
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
        return self._pq.metadata.num_rows, self._parquet_dim()

    def _parquet_dim(self) -> int:
        """The length of the first vector, once the column is known to hold lists of numbers."""
        import pyarrow as pa

        kind = self._pq.schema_arrow.field(self.vector_column).type
        is_list = pa.types.is_list(kind) or pa.types.is_large_list(kind)
        if not (is_list or pa.types.is_fixed_size_list(kind)):
            raise BadInput(self._not_vectors(f"{kind} values"))
        if not (pa.types.is_floating(kind.value_type) or pa.types.is_integer(kind.value_type)):
            raise BadInput(self._not_vectors(f"lists of {kind.value_type}"))
        for batch in self._pq.iter_batches(batch_size=CHUNK, columns=[self.vector_column]):
            for value in batch.column(0):
                if value.is_valid:
                    return len(value)
        return 0

    def _not_vectors(self, what: str) -> str:
        return (
            f"{self.path}: column {self.vector_column!r} holds {what}; expected a list of floats "
            "per row (name the right column with --vector-column)"
        )

    def _path_lines(self) -> Iterator[str]:
        """The paths file's lines, each checked to be UTF-8."""
        with open(self.paths_file, "rb") as f:
            for number, raw in enumerate(f, 1):
                try:
                    yield raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError:
                    raise BadInput(
                        f"{self.paths_file}: line {number} is not valid UTF-8 "
                        f"({raw.rstrip().decode('utf-8', 'backslashreplace')}); save the file "
                        "as UTF-8"
                    ) from None

    # ---- chunks -----------------------------------------------------------------------------
    def resolve(self, p: str) -> str:
        p = os.path.expanduser(p)
        if not os.path.isabs(p) and self.base is not None:
            p = os.path.join(self.base, p)
        return os.path.abspath(p)

    def chunks(self, dim: int) -> Iterator[tuple[int, list[str], np.ndarray]]:
        """(first row number, absolute paths, float32 vectors) per chunk."""
        if hasattr(self, "_npy"):
            lines_of, start = self._path_lines(), 0
            while lines := [ln for _, ln in zip(range(CHUNK), lines_of)]:
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
            self._check_lengths(col, start, dim)
            x = (
                col.flatten()
                .to_numpy(zero_copy_only=False)
                .astype(np.float32, copy=False)
                .reshape(-1, dim)
            )
            yield start, paths, x
            start += len(paths)

    def _check_lengths(self, col, start: int, dim: int) -> None:
        """Every row of the chunk holds a vector of ``dim`` numbers."""
        nulls = np.asarray(col.is_null().to_numpy(zero_copy_only=False))
        if nulls.any():
            row = start + int(np.flatnonzero(nulls)[0]) + 1
            raise BadInput(f"{self.path}: row {row} has no vector (expected a list of floats)")
        lengths = (
            col.value_lengths().to_numpy(zero_copy_only=False)
            if hasattr(col, "value_lengths")
            else np.full(len(col), col.type.list_size)
        )
        if (lengths != dim).any():
            j = int(np.flatnonzero(lengths != dim)[0])
            raise BadInput(
                f"{self.path}: row {start + j + 1} has a vector of length {int(lengths[j])}, "
                f"expected {dim} (column {self.vector_column!r} must be a list of floats)"
            )

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
