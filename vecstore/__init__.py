"""vecstore: image similarity search and semi-supervised labeling.

Embeddings live in SQLite (the source of truth) and in FAISS indexes (derived, rebuildable);
see ``vecstore.store.Store`` for the library entry point.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vecstore")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
