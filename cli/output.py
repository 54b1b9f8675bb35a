"""Output formats shared by commands: a table on a terminal, --json lines, --csv."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from typing import Any

import click


def emit_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str) -> None:
    if fmt == "json":
        for r in rows:
            click.echo(json.dumps({c: r.get(c) for c in columns}, ensure_ascii=False))
    elif fmt == "csv":
        w = csv.DictWriter(sys.stdout, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({c: "" if r.get(c) is None else r.get(c) for c in columns})
    else:
        click.echo(table(rows, columns))


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


def format_option(f):
    """--json / --csv flags, stored as the `fmt` parameter ("table" by default)."""
    f = click.option("--csv", "fmt", flag_value="csv", help="CSV with a header row.")(f)
    f = click.option("--json", "fmt", flag_value="json", help="One JSON object per line.")(f)
    f = click.option("--table", "fmt", flag_value="table", default=True, hidden=True)(f)
    return f
