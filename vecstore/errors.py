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
    def __init__(self, path: str, holder: str | None = None) -> None:
        who = f" (pid {holder})" if holder else ""
        super().__init__(
            f"store is locked by another vecstore process{who}: {path}. Only one writer at a time; "
            "wait for it to finish (queries keep working meanwhile)."
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
