"""What the bench scripts share: lines describing the machine they ran on, recording."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import tempfile
from datetime import datetime
from pathlib import Path


def machine_line(load: float) -> str:
    """CPU model, cores, RAM and the load average before the runs."""
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    ram = "unknown"
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        kib = next((int(ln.split()[1]) for ln in f if ln.startswith("MemTotal:")), None)
        ram = f"{kib / 2**20:.1f} GiB" if kib else ram
    return (
        f"CPU: {cpu}; os.cpu_count() = {os.cpu_count()}; RAM: {ram}; load average (1 min) "
        f"before the runs: {load:.2f}"
    )


def machine_lines(load: float) -> list[str]:
    """``machine_line`` and the versions of Python and the numeric libraries."""
    import faiss
    import numpy as np
    import scipy
    import sklearn

    return [
        machine_line(load),
        f"Python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"faiss {faiss.__version__}, scikit-learn {sklearn.__version__}",
    ]


BENCHMARKS_MD = Path(__file__).with_name("BENCHMARKS.md")
BENCHMARKS_HEADER = (
    "# Benchmarks\n\n"
    "Sections appended by the scripts in `bench/` when run with `--record`. Numbers hold for\n"
    "the machine they were taken on: compare runs on the same machine only.\n"
)


def record(name: str, notes: list[str], command: str, body: str) -> Path:
    """Append a dated section (notes as bullets, the command, a Markdown body) to BENCHMARKS.md."""
    stamp = datetime.now().astimezone().isoformat(timespec="seconds")
    section = "\n".join(
        [
            f"\n## {name} — {stamp}\n",
            *(f"- {n}" for n in notes),
            f"- command: `{command}`\n",
            body,
            "",
        ]
    )
    existing = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else BENCHMARKS_HEADER
    BENCHMARKS_MD.write_text(existing + section)
    return BENCHMARKS_MD


def markdown_table(
    header: list[str], rows: list[list[str]], aligns: list[str] | None = None
) -> str:
    aligns = aligns or ["--:"] * len(header)
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [header, aligns, *rows])


def out_folder(
    stack: contextlib.ExitStack, out: Path | None, prefix: str, entries: tuple[str, ...]
) -> Path:
    """Where a bench run writes: a temporary folder removed when ``stack`` closes, or ``out``
    with the ``entries`` a previous run left there (files or folders) removed first."""
    if out is None:
        return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))
    out = out.resolve()
    for entry in entries:
        if (out / entry).is_dir():
            shutil.rmtree(out / entry)
        else:
            (out / entry).unlink(missing_ok=True)
    return out
