"""Choosing a space's vector transform as a recorded run: fitted on the space's raw vectors
(mean-centring, PCA whitening) and kept, or cleared for the raw cosine; ``auto`` keeps the
one whose labels score best out-of-fold. Every comparison of
the space's vectors then goes through it (labeling.data.space_matrix, search.cache); the
Store rebuilds the space's index after it."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BadInput
from ..learn.knn import normalize
from ..learn.transform import RAW, TransformParams, VectorTransform, check_components, describe
from ..params import EvaluationParams
from ..results import Transformed
from .comparison import minority_class, score_method
from .crossfit import Experts, cross_fit, latest_params
from .labels import classes as store_classes

if TYPE_CHECKING:  # pragma: no cover
    from ..db import Database
    from ..db.models import Space


def choose_transform(x: np.ndarray, params: TransformParams) -> VectorTransform | None:
    """The transform of kind ``params.kind`` fitted on the raw vectors x (None: raw cosine):
    the one place a kind becomes a transform."""
    if params.kind == RAW:
        return None
    return VectorTransform.fit(x, params.kind, params.n_components, params.seed)


AUTO = "auto"
AUTO_PCA_DIMS = 50  # the PCA that auto tries (fewer when the space has fewer dims or rows)


def auto_params(db: Database, space: str | None, seed: int = 0) -> tuple[TransformParams, dict]:
    """For ``auto``: raw, centred and PCA-whitened vectors each scored out-of-fold on the
    expert labels (the space's latest method, the same folds); the best by F2 of the rarer
    class for two classes, else accuracy (raw first on ties), and the scores."""
    sp = db.spaces.get(space)
    ids, raw = db.vectors.get(sp)
    experts = Experts.load(db, sp)
    classes = store_classes(db)
    prop = latest_params(db, sp.name)
    positive = minority_class(experts.labels, classes)
    criterion = "f2_pos" if positive is not None else "accuracy"
    dims = min(AUTO_PCA_DIMS, sp.dim, len(ids) - 1)
    tried: list[dict[str, Any]] = []
    for cand in (TransformParams(RAW), TransformParams("center"), TransformParams("pca", dims)):
        t = choose_transform(raw, replace(cand, seed=seed))
        x = normalize(raw) if t is None else t.apply(raw)
        oof = cross_fit(db, replace(experts, x=x), classes, EvaluationParams(seed=seed), prop)
        score = score_method(prop.method, oof, positive).mean[criterion]
        tried.append({"kind": cand.kind, "n_components": cand.n_components, "score": score})
    best = max(range(len(tried)), key=lambda i: tried[i]["score"] or 0.0)
    chosen = TransformParams(tried[best]["kind"], tried[best]["n_components"], seed)
    return chosen, {"criterion": criterion, "method": prop.method, "tried": tried}


def set_transform(
    db: Database, space: str | None, params: TransformParams, chosen_by: dict | None = None
) -> Transformed:
    """Fit ``params``' transform on the space's raw vectors now (the store's first space when
    ``space`` is None) and keep it, replacing the one it had ("raw": clear it); recorded as a
    "transform" run. The index is not touched here: it is rebuilt on its next use."""
    sp = db.spaces.get(space)
    n = db.vectors.count(sp)
    _check_fit(sp, n, params)
    t0 = time.perf_counter()
    with db.runs.record("transform", sp.name, params.to_dict()) as run:
        t = choose_transform(db.vectors.get(sp)[1], params) if params.kind != RAW else None
        if t is None:
            db.spaces.clear_transform(sp.id)
        else:
            db.spaces.set_transform(sp.id, t)
        out = Transformed(
            run_id=run.id,
            space=sp.name,
            kind=params.kind,
            description=describe(t),
            dim_in=sp.dim,
            dim_out=sp.dim if t is None else t.dim_out,
            fitted_on=0 if t is None else t.fitted_on,
            vectors=n,
            params={} if t is None else dict(t.params),
            seconds=round(time.perf_counter() - t0, 3),
            chosen_by=chosen_by,
        )
        run.stats = out.stats()
    return out


def _check_fit(sp: Space, n: int, params: TransformParams) -> None:
    """Refuse, before any run is recorded, a fit the space's vectors cannot give."""
    if params.kind == RAW:
        return
    if n < 2:
        have = "no vectors yet" if n == 0 else "1 vector"
        raise BadInput(
            f"space {sp.name!r} has {have}: a transform is fitted on its vectors (2 or more); "
            f"embed images first (`vecstore ingest DIR --space {sp.name}`)"
        )
    if params.n_components is not None:
        check_components(params.n_components, n, sp.dim)
