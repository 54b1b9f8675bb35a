"""What every command gets: where the store is, and a way to open it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from vecstore.store import Store


class Ctx:
    def __init__(self, store: str | None) -> None:
        from vecstore.store import resolve_store_path

        self.store_path: Path = resolve_store_path(store)

    def open(self, *, write: bool = False, create: bool = False) -> Store:
        """The store, opened (use it in a with block)."""
        from vecstore.store import Store

        return Store.open(self.store_path, write=write, create=create)
