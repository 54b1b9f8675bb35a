"""Reading the CSV files users hand to vecstore (labels, truth, metadata)."""

from __future__ import annotations

import os

from .errors import BadInput


def read_user_csv(path: str | os.PathLike[str], what: str):
    """The CSV as a pandas DataFrame of strings (empty cells stay ""), or a BadInput that says
    which file and why."""
    import pandas as pd

    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise BadInput(f"{what} file not found: {path}") from None
    except Exception as exc:
        raise BadInput(f"cannot read {what} CSV {path}: {exc}") from exc
