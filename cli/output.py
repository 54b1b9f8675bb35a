"""Printing results: a readable table on a terminal, --json (one object per line), --csv."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import click


def emit_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str) -> None:
    """Rows as a table, JSON lines or CSV, with these columns."""
    if fmt == "json":
        emit_json({c: r.get(c) for c in columns} for r in rows)
    elif fmt == "csv":
        w = csv.DictWriter(
            sys.stdout, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n"
        )
        w.writeheader()
        for r in rows:
            w.writerow({c: "" if r.get(c) is None else r.get(c) for c in columns})
    else:
        click.echo(table(rows, columns))


def emit_json(objects: Iterable[dict[str, Any]]) -> None:
    for obj in objects:
        click.echo(json.dumps(obj, ensure_ascii=False))


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


def random_weights_note(space: str, random: bool) -> None:
    """Say on stderr when a space's vectors come from an untrained network."""
    if random:
        click.echo(
            f"note: space {space} uses RANDOM (untrained) weights: these similarities come from "
            "an untrained network and carry no meaning beyond tests.",
            err=True,
        )


def data_on_stdout(out: object) -> bool:
    """-o - (or /dev/stdout): the data goes to standard output, so the summary goes to
    stderr."""
    return str(out) in ("-", "/dev/stdout")


def where(out: object) -> str:
    """How a summary names the output: "standard output" for -o -."""
    return "standard output" if str(out) == "-" else str(out)
