"""Spreading the expert labels of a space (by label propagation on its k-NN graph, or another
of vecstore.learn.methods), as a recorded run whose pseudo-labels (with confidence, runner-up,
margin and class distribution) are stored."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BadInput
from ..learn.graph import GraphHealth, graph_health
from ..learn.methods import is_graph_method, make_method
from ..params import AUTO, LABEL_METHODS, PropagationParams
from ..results import Propagation
from .data import space_matrix

if TYPE_CHECKING:  # pragma: no cover
    from ..db import Database

WRITE_ROWS = 20000  # prediction rows built and written at a time: bounded memory
GRAPH_NOTE = "kNN, cosine: exact (FAISS) up to 20,000 vectors, else IVF self-join at recall >= 0.95"


def spread(
    x: np.ndarray,
    ids: np.ndarray,
    seeds: dict[int, str],
    params: PropagationParams,
    progress: bool = False,
) -> tuple[list[str], Any]:
    """``params.method`` (not "auto") from the ``seeds`` (image id -> label) among the rows
    ``ids`` of x: the classes and the fitted estimator (see vecstore.learn.methods).

    Only seeds with a vector in ``ids`` count: the distributions have one column per class
    that has a seed here, and the classes returned name those columns in order."""
    in_space = {int(i) for i in ids}
    classes = sorted({lab for i, lab in seeds.items() if i in in_space})
    if not classes:
        raise BadInput(
            "no expert labels yet: add some with `vecstore labels import FILE.csv`, "
            "`vecstore labels set PATH LABEL` or `ingest --labels-from-folders`"
        )
    if len(classes) < 2:
        raise BadInput(
            f"only one class ({classes[0]!r}) among the expert labels; propagation "
            "needs at least two"
        )
    est = make_method(params.method, params, progress=progress)
    try:
        return classes, est.fit(x, _codes(ids, seeds, classes))
    except ValueError as exc:  # a method that cannot take this data says why
        raise BadInput(f"{params.method}: {exc}") from exc


def _codes(ids: np.ndarray, seeds: dict[int, str], classes: list[str]) -> np.ndarray:
    """The class index of each row's seed, -1 for the rows without one."""
    code = {c: j for j, c in enumerate(classes)}
    return np.array([code[seeds[int(i)]] if int(i) in seeds else -1 for i in ids])


def health(
    db: Database,
    x: np.ndarray,
    ids: np.ndarray,
    seeds: dict[int, str],
    classes: list[str],
    lp: Any,
) -> GraphHealth | None:
    """The graph's health for these seeds (see ``learn.graph.graph_health``), its suggested
    images named by image id and path; None for a method that does not use the graph."""
    if not hasattr(lp, "components_"):
        return None
    y = _codes(ids, seeds, classes)
    h = graph_health(
        lp.components_, lp.degree_, y, x,
        names=classes, ids=ids, distributions=lp.label_distributions_,
    )  # fmt: skip
    wanted = sorted({i for w in h.warnings for i in w.suggest})
    found = db.images.paths_and_labels(wanted) if wanted else {}
    for w in h.warnings:
        w.paths = [found[i][0] if i in found else str(i) for i in w.suggest]
    return h


def run_params(params: PropagationParams, chosen_by: dict | None = None) -> dict[str, Any]:
    """What a propagation run records: its parameters, the method's meaning and, for a
    method chosen by ``auto``, the out-of-fold comparison that chose it."""
    out: dict[str, Any] = {**params.to_dict(), "method_means": LABEL_METHODS[params.method]}
    if is_graph_method(params.method):
        out |= {
            "graph": GRAPH_NOTE,
            "class_balanced": params.method == "propagation",
            "solver": "conjugate gradient",
        }
    if chosen_by is not None:
        out["chosen_by"] = chosen_by
    return out


def propagate(
    db: Database,
    space: str | None,
    params: PropagationParams,
    *,
    progress: bool = False,
    chosen_by: dict | None = None,
) -> Propagation:
    """Spread the expert labels of a space with ``params.method`` (already chosen when it
    was "auto": see vecstore.labeling.methods); store the pseudo-labels."""
    if params.method == AUTO:
        raise ValueError("resolve method 'auto' first (vecstore.labeling.methods.choose)")
    t0 = time.perf_counter()
    sp, ids, x = space_matrix(db, space)
    load_s = time.perf_counter() - t0
    seeds = db.labels.all()
    with db.runs.record("propagate", sp.name, run_params(params, chosen_by)) as run:
        classes, lp = spread(x, ids, seeds, params, progress)
        t0 = time.perf_counter()
        unlabeled = np.array([int(i) not in seeds for i in ids])
        counts: Counter = Counter()
        db.outputs.save_predictions(_prediction_rows(run.id, ids, classes, lp, unlabeled, counts))
        result = Propagation(
            run_id=run.id,
            space=sp.name,
            n=len(ids),
            classes=classes,
            seeds=sum(1 for i in ids if int(i) in seeds),
            propagated=int(unlabeled.sum()),
            counts={str(k): v for k, v in counts.items()},
            graph=getattr(lp, "graph_", None),
            unreached=int((~lp.reached_).sum()),
            no_label=int((lp.label_distributions_.sum(axis=1) <= 0).sum()),
            mean_confidence=float(lp.confidence_[unlabeled].mean()) if unlabeled.any() else None,
            cg_iterations=getattr(lp, "n_iter_", []),
            weights_random=sp.weights_random,
            method=params.method,
            chosen_by=chosen_by,
            seconds={
                "load": round(load_s, 2),
                **getattr(lp, "seconds_", {}),
                "write": round(time.perf_counter() - t0, 2),
            },
            health=health(db, x, ids, seeds, classes, lp),
        )
        run.stats = result.to_dict()
    return result


def _prediction_rows(
    run_id: int,
    ids: np.ndarray,
    classes: list[str],
    lp: Any,
    unlabeled: np.ndarray,
    counts: Counter,
) -> Iterator[list[dict[str, Any]]]:
    """Prediction rows, WRITE_ROWS at a time; counts the pseudo-labels of unlabeled images."""
    p = lp.label_distributions_
    has = p.sum(axis=1) > 0
    two = len(classes) > 1
    for start in range(0, len(ids), WRITE_ROWS):
        part = p[start : start + WRITE_ROWS]
        order = np.argsort(-part, axis=1)[:, :2]
        rr = np.arange(len(part))
        best = order[:, 0]
        second = order[:, 1] if two else best
        margin = part[rr, best] - (part[rr, second] if two else 0)
        recs = []
        for r in range(len(part)):
            g = start + r
            ok = bool(has[g])
            recs.append(
                {
                    "run_id": run_id,
                    "image_id": int(ids[g]),
                    "label": classes[best[r]] if ok else None,
                    "confidence": float(lp.confidence_[g]),
                    "second_label": classes[second[r]] if ok and two else None,
                    "margin": float(margin[r]) if ok else 0.0,
                    "reached": bool(lp.reached_[g]),
                    "distribution": part[r].astype(np.float32).tobytes(),
                }
            )
            if unlabeled[g]:
                counts[recs[-1]["label"]] += 1
        yield recs
