"""Exceptions raised by vecstore. Every message says what happened and how to fix it."""

from __future__ import annotations


class VecstoreError(Exception):
    """Base class: the CLI turns these into a clean error message and exit status 1."""


class StoreNotFound(VecstoreError):
    def __init__(self, path: str) -> None:
        super().__init__(
            f"no vecstore store at {path}. Create one with `vecstore --store {path} ingest DIR`, "
            "or point --store / VECSTORE_STORE at an existing store."
        )


class StoreLocked(VecstoreError):
    """Another process holds the one-writer lock: ``holder`` its pid, ``purpose`` what it
    is doing (its command) when it said."""

    def __init__(self, path: str, holder: str | None = None, purpose: str | None = None) -> None:
        self.holder, self.purpose = holder, purpose
        who = f" (pid {holder}{': ' + purpose if purpose else ''})" if holder else ""
        super().__init__(
            f"store is locked by another vecstore process{who}: {path}. Only one writer at a time; "
            "wait for it to finish (queries keep working meanwhile), or give the writing "
            "command `vecstore --wait SECONDS` to wait for the lock."
        )


class StoreVersionError(VecstoreError):
    """The store's schema is from a vecstore this one does not know (usually a newer one)."""


class UnknownSpace(VecstoreError):
    pass


class UnknownImage(VecstoreError):
    pass


class WeightsUnavailable(VecstoreError):
    pass


class EmbedError(VecstoreError):
    """One image could not be embedded (decoding, unsupported content)."""


class BadInput(VecstoreError):
    """A user-supplied file (CSV, folder) is not usable as given."""


class NoRun(VecstoreError):
    """A command needs a run (a propagation, say) that the store does not have."""


class StoreDamaged(VecstoreError):
    """SQLite finds the database file damaged (corrupt pages, or not a database at all)."""

    def __init__(self, path: str, detail: str) -> None:
        self.detail = detail
        super().__init__(
            f"the database {path} is damaged ({detail}): run `vecstore check` to see what is "
            "wrong, and restore a backup of it (the index files are rebuilt from it)"
        )


class StoreReadOnly(VecstoreError):
    """A change was asked of a store this user may only read."""

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(
            f"the store {path} is read-only for this user ({detail}): reading commands (info, "
            "query, check, runs, export) work; to change it, get write access to the folder "
            "or copy the store"
        )


class StoreUnreadable(VecstoreError):
    """SQLite cannot open or read the database file (permissions, a disk I/O error)."""

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(
            f"cannot use the database {path} ({detail}): check that the store folder and its "
            "files can be read by this user and that the disk is sound (`vecstore check`)"
        )


class WriteFailed(VecstoreError):
    """A file of the store could not be written (disk full, a file in the way); what was
    already written to the database stays."""
