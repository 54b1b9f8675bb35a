"""Dropping files from a store on purpose (``vecstore forget``): their paths go, and an image
left with no path goes with its vectors. An expert label is deleted only when asked, and then
as a recorded label batch, so that ``vecstore labels history PATH`` still shows it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .. import dicom
from ..db.labels import BatchInfo, Change
from ..errors import BadInput
from ..results import Forgotten

if TYPE_CHECKING:  # pragma: no cover
    from ..db import Database

SHOWN = 5  # labeled images named in a refusal


def forget(
    db: Database,
    targets: Sequence[str],
    *,
    who: str,
    missing_only: bool = False,
    drop_labels: bool = False,
) -> Forgotten:
    """Forget the known paths named by ``targets`` (files, or folders: every known path under
    them); ``missing_only``: only those whose file is not on disk. Refused, changing nothing,
    when an image that would go carries an expert label, unless ``drop_labels``."""
    paths = _known_paths(db, targets)
    if missing_only:
        paths = {p for p in paths if not dicom.file_exists(p)}
    owners = db.images.owners(sorted(paths))
    doomed = db.images.left_without_paths(owners)
    labeled = db.labels.current(sorted(doomed))
    if labeled and not drop_labels:
        raise BadInput(_refusal(owners, labeled))
    batch = None
    if labeled:
        changes = [Change(iid, None) for iid in sorted(labeled)]
        batch = db.labels.apply(changes, BatchInfo("forget", who, "vecstore forget"))
    db.images.forget(owners)
    return Forgotten(paths=len(owners), images=len(doomed), labels=len(labeled), batch=batch)


def _known_paths(db: Database, targets: Sequence[str]) -> set[str]:
    out: set[str] = set()
    for target in targets:
        path = os.path.abspath(target)
        found = set(db.images.owners([path])) | db.images.paths_under(path)
        if not found:
            raise BadInput(
                f"{target}: no file the store knows is at or under this path "
                "(see `vecstore info --failed` and `vecstore check` for the known ones)"
            )
        out |= found
    return out


def _refusal(owners: dict[str, int], labeled: dict[int, tuple]) -> str:
    named = sorted(p for p, iid in owners.items() if iid in labeled)
    shown = ", ".join(f"{p} ({labeled[owners[p]][0]})" for p in named[:SHOWN])
    more = f" and {len(named) - SHOWN} more" if len(named) > SHOWN else ""
    return (
        f"nothing forgotten: {len(labeled)} of these images carry an expert label ({shown}{more}); "
        "add --drop-labels to forget them with their labels (recorded: `vecstore labels "
        "history PATH` shows them), or put the files back"
    )
