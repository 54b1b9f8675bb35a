"""The user's files in and out: CSV files handed to vecstore (labels, truth, metadata), the
files vecstore writes (written whole to a temporary file, then renamed over the target), and
content hashes."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from .errors import BadInput

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

HASH_CHUNK = 1 << 20


def read_user_csv(path: str | os.PathLike[str], what: str) -> pd.DataFrame:
    """The CSV as a pandas DataFrame of strings (empty cells stay ""), or a BadInput that says
    which file and why."""
    import pandas as pd

    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise BadInput(f"{what} file not found: {path}") from None
    except Exception as exc:
        raise BadInput(f"cannot read {what} CSV {path}: {exc}") from exc


def write_atomically(out: str | os.PathLike[str], write: Callable[[IO[str]], None]) -> Path:
    """Call ``write`` on a temporary text file beside ``out``, then rename it over ``out``: a
    reader never sees half a file, and a failure leaves the old one. The file is created
    with mode 0666 less the umask, as any program's would be."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            write(f)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def write_csv(out: str | os.PathLike[str], frame: pd.DataFrame) -> Path:
    """A DataFrame as CSV (header, no index) that pandas.read_csv reads back with no options."""
    return write_atomically(out, lambda f: frame.to_csv(f, index=False))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The file's sha256, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()
