"""Metadata CSV files: one row per image, joined by a path column (absolute, or relative to
the ingested folder) or by a file-name column; the other columns are stored per image."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .. import dicom
from ..errors import BadInput
from ..files import read_user_csv

KEY_COLUMNS = ("path", "file", "filename", "file_name", "name", "image")


@dataclass
class Metadata:
    by: str  # "path" or "name": what the key column holds
    rows: dict[str, dict[str, Any]]  # key -> {column: value}


def read_metadata_csv(path: str | os.PathLike[str]) -> Metadata:
    """The rows of a metadata CSV by their key, or a BadInput naming what is wrong."""
    df = read_user_csv(path, "metadata")
    cols = {str(c).strip().lower(): c for c in df.columns}
    key_col = next((cols[k] for k in KEY_COLUMNS if k in cols), None)
    if key_col is None:
        raise BadInput(
            f"metadata CSV {path} needs a column naming the image, one of "
            f"{', '.join(KEY_COLUMNS)}; it has: {', '.join(map(str, df.columns))}"
        )
    if len(df.columns) < 2:
        raise BadInput(f"metadata CSV {path} has no column besides {key_col!r}")
    keys = df[key_col].str.strip()
    if (keys == "").any():
        raise BadInput(f"metadata CSV {path}: {(keys == '').sum()} rows have an empty {key_col!r}")
    dup = keys[keys.duplicated()].unique()
    if len(dup):
        raise BadInput(f"metadata CSV {path}: {key_col!r} repeats {', '.join(dup[:5])}")
    values = df.drop(columns=[key_col]).to_dict(orient="records")
    by = "path" if key_col.strip().lower() == "path" else "name"
    return Metadata(by, dict(zip(keys, values)))


def check_unambiguous(meta: Metadata | None, root: str, paths: list[str]) -> None:
    """A file name is no key when several files found carry it (PACS exports repeat names
    such as IM-0001.dcm in every patient's folder): its row would go to all of them. Raised
    before anything is written, naming the files and asking for a path column."""
    if meta is None or meta.by != "name":
        return
    by_name: dict[str, list[str]] = {}
    for path in paths:
        by_name.setdefault(os.path.basename(path), []).append(path)
    shared = {k: by_name[k] for k in meta.rows if len(by_name.get(k, ())) > 1}
    if not shared:
        return
    name, where = next(iter(shared.items()))
    files = ", ".join(os.path.relpath(p, root) for p in where[:3])
    more = f" and {len(shared) - 1} more names" if len(shared) > 1 else ""
    raise BadInput(
        f"metadata CSV joins by file name, but {name!r} names {len(where)} files ({files}){more}: "
        "give the CSV a path column (relative to the folder ingested, or absolute) instead"
    )


@dataclass
class MetadataMatch:
    values: dict[int, dict[str, Any]]  # image id -> the columns of its row(s)
    pairs: int  # (row, image) pairs joined
    unmatched: list[str]  # keys of the rows that matched no image


def match(meta: Metadata, root: str, path_to_image: dict[str, int]) -> MetadataMatch:
    """Join the rows to the images found under ``root`` (the frames of a file: to its row)."""
    by_key: dict[str, list[int]] = {}
    for image_path, iid in path_to_image.items():
        path = dicom.file_of(image_path)  # a frame takes its file's row
        keys = (
            {path, os.path.relpath(path, root)} if meta.by == "path" else {os.path.basename(path)}
        )
        for k in keys:
            by_key.setdefault(os.path.normpath(k), []).append(iid)
    out = MetadataMatch({}, 0, [])
    for key, cols in meta.rows.items():
        ids = by_key.get(os.path.normpath(key))
        if not ids:
            out.unmatched.append(key)
        for iid in set(ids or ()):
            out.values[iid] = {**out.values.get(iid, {}), **cols}
            out.pairs += 1
    return out
