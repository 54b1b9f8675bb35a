"""Clustering a space as a recorded run: the assignment stored, scored against the expert
labels (or a truth file) and by the cosine silhouette."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import BadInput
from ..learn.cluster import choose_k, make_clusterer
from ..learn.metrics import clustering_metrics
from ..params import ClusterParams
from ..results import Clustering
from .data import space_matrix

if TYPE_CHECKING:  # pragma: no cover
    from ..db import Database

SILHOUETTE_SAMPLE = 10000  # images the silhouette is computed on
CHOOSE_K_SAMPLE = 5000  # images each k's silhouette is computed on when choosing k


def cluster(
    db: Database, space: str | None, params: ClusterParams, truth: dict[int, str] | None = None
) -> Clustering:
    """Cluster a space, store the assignment as a run, score it against the labels."""
    sp, ids, x = space_matrix(db, space)
    k, scores = params.k, None
    if k is None:
        try:
            k, scores = choose_k(x, params, sample_size=min(SILHOUETTE_SAMPLE, CHOOSE_K_SAMPLE))
        except ValueError as exc:
            raise BadInput(str(exc)) from None
    if not 2 <= k < len(ids):
        raise BadInput(
            f"-k {k} must be between 2 and {len(ids) - 1} (the space has {len(ids)} vectors)"
        )
    with db.runs.record("cluster", sp.name, {**params.to_dict(), "k": k}) as run:
        labels = make_clusterer(params, k).fit(x).labels_
        reference = truth if truth is not None else db.labels.all()
        known = np.array([int(i) in reference for i in ids])
        y = np.array([reference[int(i)] for i in ids[known]], dtype=object)
        metrics = clustering_metrics(
            y if known.any() else None,
            labels[known] if known.any() else labels,
            None,
            seed=params.seed,
        )
        sil = clustering_metrics(None, labels, x, sample_size=SILHOUETTE_SAMPLE, seed=params.seed)
        result = Clustering(
            run_id=run.id,
            space=sp.name,
            method=params.method,
            k=k,
            n=len(ids),
            scored_against="truth" if truth is not None else "expert labels",
            n_scored=int(known.sum()),
            sizes=np.bincount(labels, minlength=k).tolist(),
            silhouette_by_k=scores,
            weights_random=sp.weights_random,
            metrics={**metrics, **sil},
        )
        db.outputs.save_clusters(run.id, ids, labels)
        run.stats = result.to_dict()
    return result
