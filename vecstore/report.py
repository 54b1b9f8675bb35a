"""A self-contained HTML report of a space: map of the images, clusters, pseudo-labels,
descriptor comparison, evaluation, and the images to review next.

Everything is embedded (plotly.js, the data, the thumbnails as data URIs): the file opens
offline in any browser, with no server.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import time
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import BadInput
from .files import write_atomically
from .labeling.data import space_matrix
from .labeling.export import export_rows, review_rules
from .results import ReportFile

if TYPE_CHECKING:  # pragma: no cover
    from .db import Database
    from .db.models import Run

MAX_POINTS = 5000  # points on the map (a sample beyond that; expert-labeled images always kept)
MAX_THUMBS = 1500  # thumbnails embedded for hovering (a sample of the points)
CLUSTER_GRID = 24  # sample thumbnails per cluster
REVIEW_ROWS = 100  # rows of the needs_review table
THUMB = 64  # thumbnail size in pixels


def thumbnail(path: str, size: int = THUMB) -> str | None:
    """A small JPEG data URI of an image, or None when the file cannot be read now."""
    from .embedders import open_image, to_rgb

    try:
        img = to_rgb(open_image(path))
    except Exception:  # a moved or damaged file must not break the report
        return None
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def project(x: np.ndarray, method: str, seed: int) -> np.ndarray:
    """(n, 3) coordinates: PCA, or t-SNE / UMAP (on the points given, a sample already)."""
    if method == "pca":
        from sklearn.decomposition import PCA

        dims = min(3, x.shape[1], len(x))
        out = PCA(dims, random_state=seed).fit_transform(x)
    elif method == "tsne":
        from sklearn.manifold import TSNE

        out = TSNE(
            3, init="pca", random_state=seed, perplexity=min(30, max(5, len(x) // 4))
        ).fit_transform(x)
    elif method == "umap":
        try:
            import umap  # type: ignore[import-not-found]
        except ImportError:
            raise BadInput(
                "--projection umap needs the umap-learn package (pip install umap-learn)"
            ) from None
        out = umap.UMAP(n_components=3, random_state=seed).fit_transform(x)
    else:
        raise BadInput(f"unknown projection {method!r} (pca, tsne or umap)")
    if out.shape[1] < 3:
        out = np.c_[out, np.zeros((len(out), 3 - out.shape[1]))]
    return np.round(out.astype(np.float64), 4)


def _fmt(v: Any) -> Any:
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def collect(
    db: Database, space: str | None, run_id: int | None, projection: str, seed: int
) -> dict[str, Any]:
    """Everything the page shows, as plain JSON-able data."""
    rng = np.random.default_rng(seed)
    sp, ids, x = space_matrix(db, space)
    prop = db.runs.get(run_id, "propagate") if run_id else db.runs.latest("propagate", sp.name)
    if prop is not None and prop.space != sp.name:
        sp, ids, x = space_matrix(db, prop.space)
    cluster_run = db.runs.latest("cluster", sp.name)
    evaluation = db.runs.latest("evaluate", sp.name)
    experts = db.labels.all()
    path_of = db.images.paths()
    clusters = db.outputs.clusters(cluster_run.id) if cluster_run else {}
    rows = {}
    if prop is not None:
        table = export_rows(db, prop, review_rules(db, prop, None), cluster_run)
        rows = {r["image_id"]: r for r in table}
    chosen = _map_sample(ids, experts, rng)
    facts = _Facts(path_of, experts, clusters, rows)
    coords = project(x[chosen], projection, seed)
    return {
        "title": f"vecstore report: space {sp.name}",
        "space": {
            "name": sp.name,
            "dim": sp.dim,
            "model": sp.model,
            "weights": sp.weights,
            "random": sp.weights_random,
            "n": int(len(ids)),
        },
        "projection": projection,
        "shown": len(chosen),
        "propagation": {"run": prop.id, "params": prop.params, "classes": prop.stats.get("classes")}
        if prop
        else None,
        "cluster_run": {"run": cluster_run.id, "params": cluster_run.params}
        if cluster_run
        else None,
        "points": _points(ids[chosen], coords, facts, rng),
        "grids": _grids(clusters, path_of, rng),
        "review": _review(rows),
        "review_total": sum(1 for r in rows.values() if r["needs_review"]),
        "compare": _compare(db),
        "evaluation": _evaluation(evaluation),
    }


def _map_sample(ids: np.ndarray, experts: dict[int, str], rng: np.random.Generator) -> np.ndarray:
    """The rows on the map: all of them, or a sample of MAX_POINTS with every expert label."""
    n = len(ids)
    if n <= MAX_POINTS:
        return np.arange(n)
    must = np.flatnonzero([int(i) in experts for i in ids])
    rest = np.setdiff1d(np.arange(n), must)
    extra = rng.choice(rest, MAX_POINTS - min(len(must), MAX_POINTS), replace=False)
    return np.sort(np.concatenate([must, extra]))[:MAX_POINTS]


@dataclass
class _Facts:
    """What the report knows of each image."""

    path_of: dict[int, str]
    experts: dict[int, str]  # expert labels
    clusters: dict[int, int]  # of the latest clustering
    rows: dict[int, dict[str, Any]]  # export rows of the propagation shown

    def point(self, iid: int) -> dict[str, Any]:
        row = self.rows.get(iid, {})
        propagated = row.get("source") == "propagated"
        return {
            "id": iid,
            "path": self.path_of.get(iid, "?"),
            "cluster": self.clusters.get(iid),
            "expert": self.experts.get(iid),
            "pseudo": row.get("label") if propagated else self.experts.get(iid),
            "confidence": row.get("confidence"),
            "review": bool(row.get("needs_review", False)),
        }


def _points(
    ids: np.ndarray, coords: np.ndarray, facts: _Facts, rng: np.random.Generator
) -> list[dict[str, Any]]:
    """The map's points (ids, their coordinates), a sample of them with a thumbnail."""
    thumbs_for = set(rng.choice(len(ids), min(MAX_THUMBS, len(ids)), replace=False).tolist())
    points = []
    for j, i in enumerate(ids):
        iid = int(i)
        path = facts.path_of.get(iid)
        thumb = thumbnail(path) if j in thumbs_for and path is not None else None
        points.append({**facts.point(iid), "x": coords[j].tolist(), "thumb": thumb})
    return points


def _grids(
    clusters: dict[int, int], path_of: dict[int, str], rng: np.random.Generator
) -> dict[str, list[dict[str, Any]]]:
    """A sample of thumbnails per cluster, shown when a cluster is highlighted."""
    by_cluster: dict[int, list[int]] = {}
    for iid, c in clusters.items():
        by_cluster.setdefault(int(c), []).append(iid)
    grids = {}
    for c, members in sorted(by_cluster.items()):
        pick = rng.choice(members, min(CLUSTER_GRID, len(members)), replace=False)
        grids[str(c)] = [
            {"id": int(i), "path": path_of.get(int(i), "?"), "thumb": thumbnail(path_of[int(i)])}
            for i in pick
            if int(i) in path_of
        ]
    return grids


def _review(rows: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """The flagged pseudo-labels, lowest confidence first (REVIEW_ROWS of them)."""
    flagged = sorted((r for r in rows.values() if r["needs_review"]), key=lambda r: r["confidence"])
    return [
        {
            "id": r["image_id"],
            "path": r["path"],
            "label": r["label"],
            "confidence": r["confidence"],
            "second": r["second_label"],
            "margin": _fmt(r["margin"]),
            "reason": r["review_reason"],
            "thumb": thumbnail(r["path"]),
        }
        for r in flagged[:REVIEW_ROWS]
    ]


def _compare(db: Database) -> list[dict[str, Any]]:
    """The latest clustering of each space, scored."""
    out = []
    for other in db.spaces.all():
        run = db.runs.latest("cluster", other.name)
        if run is not None:
            m = run.stats.get("metrics", {})
            out.append(
                {
                    "space": other.name,
                    "method": run.params.get("method"),
                    "k": run.params.get("k"),
                    "run": run.id,
                    "scored": run.stats.get("scored_against"),
                    **{k: _fmt(m.get(k)) for k in ("ami", "ari", "v_measure")},
                }
            )
    return out


def _evaluation(evaluation: Run | None) -> dict[str, Any] | None:
    if evaluation is None:
        return None
    ev = evaluation.stats
    review = ev.get("review") or {}
    curve = [{"flagged": f, "accuracy": _fmt(a)} for f, a in review.get("curve", [])]
    return {
        "run": evaluation.id,
        "mode": ev.get("mode"),
        "accuracy": ev.get("accuracy"),
        "confusion": ev.get("confusion"),
        "review_curve": curve,
        "flag_share": review.get("flag_share"),
        "positive": ev.get("positive"),
    }


def script_json(data: Any) -> str:
    """``data`` as JSON to put inside a <script> element: no <, > or & in it (written \\u003c,
    \\u003e, \\u0026, which JSON.parse reads back), so that no file name or label such as
    "</script>" or "<!--<script>" can end the element early or swallow the next one."""
    text = json.dumps(data)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def write_report(
    db: Database,
    out: str | os.PathLike[str],
    *,
    space: str | None = None,
    run_id: int | None = None,
    projection: str = "pca",
    seed: int = 0,
) -> ReportFile:
    """Build the report and write it atomically; returns its path, size and timings."""
    from plotly.offline import get_plotlyjs

    t0 = time.perf_counter()
    data = collect(db, space, run_id, projection, seed)
    template = resources.files("vecstore").joinpath("report.html").read_text(encoding="utf-8")
    parts = {
        "TITLE": html.escape(data["title"]),
        "PLOTLY": get_plotlyjs(),
        "DATA": script_json(data),
    }
    # one pass: a placeholder written by a name or a label is not replaced in its turn
    page = re.sub(r"%%(TITLE|PLOTLY|DATA)%%", lambda m: parts[m[1]], template)
    path = write_atomically(out, lambda f: f.write(page))
    return ReportFile(
        path=str(path),
        bytes=len(page.encode("utf-8")),
        points=data["shown"],
        images=data["space"]["n"],
        seconds=time.perf_counter() - t0,
        space=data["space"]["name"],
    )
