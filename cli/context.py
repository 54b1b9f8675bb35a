"""What every command gets: where the store is, and a way to open it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from vecstore.store import Store


class Ctx:
    def __init__(self, store: str | None, wait: float = 0.0) -> None:
        from vecstore.store import resolve_store_path

        self.store_path: Path = resolve_store_path(store)
        self.wait = wait  # seconds a writing command waits for another writer's lock

    def open(self, *, write: bool = False, create: bool = False) -> Store:
        """The store, opened (use it in a with block); a writer names its command in the
        lock, so that a command kept waiting (or `vecstore serve`) can say what runs."""
        import click

        from vecstore.store import Store

        cmd = click.get_current_context(silent=True)
        purpose = " ".join(cmd.command_path.split()[1:]) if cmd is not None else ""
        return Store.open(
            self.store_path, write=write, create=create, wait=self.wait, purpose=purpose
        )
