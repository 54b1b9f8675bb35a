"""The user's files in and out: CSV files handed to vecstore (labels, truth, metadata), the
files vecstore writes (written whole to a temporary file, then renamed over the target; written
straight into a device, a FIFO or standard output), the CSV cells a spreadsheet must not run,
and content hashes."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import secrets
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from .errors import BadInput

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

HASH_CHUNK = 1 << 20
STDOUT = "-"  # as an output path: standard output
# A spreadsheet runs a cell that starts with one of these as a formula (OWASP, CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# such a start, maybe behind single quotes (those neutralise added, or the text's own)
_NEEDS_QUOTE = re.compile("'*[" + re.escape("".join(FORMULA_START)) + "]")
# an already open stream of this process: /dev/stdout -> /proc/self/fd/1, /dev/fd/2, ...
_OPEN_STREAM = re.compile(r"/(proc/(self|\d+)|dev)/fd/\d+")


def read_user_csv(path: str | os.PathLike[str], what: str) -> pd.DataFrame:
    """The CSV as a pandas DataFrame of strings (empty cells stay ""), or a BadInput that says
    which file and why. Cells vecstore neutralised when it wrote them (an export, a
    suggestion list) come back as they were (``unneutralise``)."""
    import pandas as pd

    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise BadInput(f"{what} file not found: {path}") from None
    except Exception as exc:
        raise BadInput(f"cannot read {what} CSV {path}: {exc}") from exc
    df.columns = [unneutralise(str(c)) for c in df.columns]
    return df.map(unneutralise)


def neutralise(text: str) -> str:
    """``text`` made safe for a spreadsheet cell: a text that starts with = + - @, a tab or a
    carriage return gets a leading single quote, so that it is shown and not run (OWASP's rule
    against CSV injection). So does one that already starts with quotes before such a
    character, so that ``unneutralise`` gives back exactly what was written."""
    return "'" + text if _NEEDS_QUOTE.match(text) else text


def unneutralise(text: str) -> str:
    """``text`` as it was before ``neutralise``: one leading single quote dropped when what
    follows it starts with = + - @, a tab or a carriage return (after more quotes maybe).
    Anything else comes back unchanged, so it is safe on any cell read back."""
    return text[1:] if text[:1] == "'" and _NEEDS_QUOTE.match(text, 1) else text


def _ask(what: str) -> str:
    return f"{what}; check the path and its permissions, or choose another output"


def _cannot(out: str | os.PathLike[str], exc: OSError, what: str = "") -> BadInput:
    why = exc.strerror or str(exc)
    return BadInput(_ask(f"cannot write {out}: {what}{why}"))


def write_atomically(out: str | os.PathLike[str], write: Callable[[IO[str]], None]) -> Path:
    """Call ``write`` on a text file, UTF-8, that becomes ``out``; returns ``out`` as a Path.

    A regular file (or a new one) is written whole to a temporary file beside it, then renamed
    over it: a reader never sees half a file, and a failure leaves the old one and no temporary
    file. It is created with mode 0666 less the umask, as any program's would be. A symlink is
    kept: the file it points to is replaced. A character device or a FIFO (/dev/null, a pipe,
    a terminal) and an open stream of this process (/dev/stdout) are written into, and ``-``
    is standard output. A folder, a block device or a socket is refused. Every failure to
    write is a BadInput that says which file and why."""
    if str(out) == STDOUT:
        _write_stdout(out, write)
        return Path(out)
    out = Path(out)
    try:
        st = os.stat(out)
    except FileNotFoundError:
        st = None  # a new file (or a symlink to one): created where the link points
    except OSError as exc:
        raise _cannot(out, exc) from exc
    if _OPEN_STREAM.fullmatch(str(out)) or _links_to_open_stream(out):
        _write_into(out, write, os.O_APPEND)  # the shell's redirection decides where it goes
    elif st is None or stat.S_ISREG(st.st_mode):
        _replace(out, Path(os.path.realpath(out)), write)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode):
        _write_into(out, write, os.O_TRUNC)
    else:
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a file, a device or a pipe"
        raise BadInput(f"cannot write {out}: it is {kind}; give the path of a file to write")
    return out


def _links_to_open_stream(path: Path) -> bool:
    """Does this symlink chain go through /proc/<pid>/fd/N or /dev/fd/N (as /dev/stdout does)?"""
    for _ in range(40):
        if not path.is_symlink():
            return False
        target = os.readlink(path)
        path = path.parent / target
        if _OPEN_STREAM.fullmatch(os.path.normpath(path)):
            return True
    return False


def _replace(out: Path, real: Path, write: Callable[[IO[str]], None]) -> None:
    """Write a temporary file beside ``real`` (the file ``out`` names, through its links),
    then rename it over ``real``."""
    try:
        real.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _cannot(out, exc, f"cannot make its folder {real.parent}: ") from exc
    tmp = real.with_name(f".{real.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise _cannot(out, exc, f"cannot create a temporary file in {real.parent}: ") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            write(f)
        os.replace(tmp, real)
    except OSError as exc:
        raise _cannot(out, exc) from exc
    finally:
        if os.path.lexists(tmp):
            tmp.unlink()


def _write_into(out: Path, write: Callable[[IO[str]], None], flags: int) -> None:
    """Write straight into a device, a FIFO or an open stream (no temporary file there)."""
    try:
        fd = os.open(out, os.O_WRONLY | os.O_NOCTTY | flags)
    except OSError as exc:
        raise _cannot(out, exc) from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            write(f)
    except OSError as exc:
        raise _cannot(out, exc) from exc


def _write_stdout(out: str | os.PathLike[str], write: Callable[[IO[str]], None]) -> None:
    """``-``: standard output, UTF-8, lines ended by what ``write`` writes."""
    stream = sys.stdout
    try:
        stream.flush()
        raw = getattr(stream, "buffer", None)
        if raw is None:  # a text-only stream (a notebook's, say)
            write(stream)
            stream.flush()
            return
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="", write_through=True)
        try:
            write(text)
            text.flush()
        finally:
            text.detach()  # standard output stays open
        raw.flush()
    except OSError as exc:
        raise _cannot("standard output", exc) from exc


def write_csv(out: str | os.PathLike[str], frame: pd.DataFrame) -> Path:
    """A DataFrame as CSV (header, no index) that pandas.read_csv reads back with no options
    into the same rows and columns, and that a spreadsheet opens without running anything.

    Numbers and booleans are written as they are (read back as numbers and booleans); every
    text cell is quoted (so a line break or a comma in it splits no row) and ``neutralise``d
    (so "=cmd|..." is shown, not run: ``unneutralise`` undoes it). Missing values are empty."""
    text_cols = [c for c in frame.columns if frame[c].dtype.kind not in "biufcmM"]
    safe = frame.copy() if text_cols else frame
    for c in text_cols:
        safe[c] = frame[c].map(lambda v: neutralise(v) if isinstance(v, str) else v)

    def write(f: IO[str]) -> None:
        f.write(",".join(map(_header_cell, frame.columns)) + "\n")
        safe.to_csv(f, index=False, header=False, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")

    return write_atomically(out, write)


def _header_cell(name: object) -> str:
    text = neutralise(str(name))
    return text if re.fullmatch(r"\w+", text) else '"' + text.replace('"', '""') + '"'


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The file's sha256, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()
