"""vecstore: image similarity search and semi-supervised labeling.

Embeddings live in SQLite (the source of truth) and in FAISS indexes (derived, rebuildable).
The library's entry point is :class:`vecstore.Store`::

    from vecstore import PropagationParams, Store

    with Store.open("store", create=True) as store:
        store.ingest("scans/", ["hog"], labels_from_folders=True)
        store.propagate("hog", PropagationParams(n_neighbors=10))
        df = store.export_table()

Names are imported on first use, so that ``import vecstore`` (and ``vecstore --help``) stays
instant.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("vecstore")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

_EXPORTS = {
    "Store": "vecstore.store",
    "ClusterParams": "vecstore.params",
    "PropagationParams": "vecstore.params",
    "EvaluationParams": "vecstore.params",
    "ExportOptions": "vecstore.params",
    "EmbedOptions": "vecstore.params",
    "PlanRequest": "vecstore.params",
    "VecstoreError": "vecstore.errors",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vecstore' has no attribute {name!r}")


__all__ = ["__version__", *_EXPORTS]
