"""Progress bars for long work: on stderr, with a rate in images/s, gone when done."""

from __future__ import annotations


def progress_bar(total: int | None, desc: str, enabled: bool):
    """A tqdm bar (a silent one when not ``enabled``)."""
    from tqdm import tqdm

    return tqdm(
        total=total, desc=desc, unit="img", disable=not enabled, leave=False, dynamic_ncols=True
    )
