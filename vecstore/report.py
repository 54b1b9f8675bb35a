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
import time
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

        out = TSNE(3, init="pca", random_state=seed, perplexity=min(30, max(5, len(x) // 4))).fit_transform(x)
    elif method == "umap":
        try:
            import umap  # type: ignore[import-not-found]
        except ImportError:
            raise BadInput("--projection umap needs the umap-learn package (pip install umap-learn)") from None
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


def collect(db: Database, space: str | None, run_id: int | None, projection: str,
            seed: int) -> dict[str, Any]:
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
    return {
        "title": f"vecstore report: space {sp.name}",
        "space": {"name": sp.name, "dim": sp.dim, "model": sp.model, "weights": sp.weights,
                  "random": sp.weights_random, "n": int(len(ids))},
        "projection": projection, "shown": len(chosen),
        "propagation": {"run": prop.id, "params": prop.params,
                        "classes": prop.stats.get("classes")} if prop else None,
        "cluster_run": {"run": cluster_run.id, "params": cluster_run.params} if cluster_run else None,
        "points": _points(ids, x, chosen, projection, seed, rows, experts, clusters, path_of, rng),
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


def _points(ids, x, chosen, projection, seed, rows, experts, clusters, path_of, rng) -> list[dict]:
    coords = project(x[chosen], projection, seed)
    thumbs_for = set(rng.choice(len(chosen), min(MAX_THUMBS, len(chosen)), replace=False).tolist())
    points = []
    for j, r in enumerate(chosen):
        iid = int(ids[r])
        row = rows.get(iid, {})
        points.append({
            "id": iid, "path": path_of.get(iid, "?"), "x": coords[j].tolist(),
            "cluster": clusters.get(iid), "expert": experts.get(iid),
            "pseudo": row.get("label") if row.get("source") == "propagated" else experts.get(iid),
            "confidence": row.get("confidence"), "review": bool(row.get("needs_review", False)),
            "thumb": thumbnail(path_of[iid]) if j in thumbs_for and iid in path_of else None,
        })
    return points


def _grids(clusters: dict[int, int], path_of: dict[int, str],
           rng: np.random.Generator) -> dict[str, list[dict[str, Any]]]:
    """A sample of thumbnails per cluster, shown when a cluster is highlighted."""
    by_cluster: dict[int, list[int]] = {}
    for iid, c in clusters.items():
        by_cluster.setdefault(int(c), []).append(iid)
    grids = {}
    for c, members in sorted(by_cluster.items()):
        pick = rng.choice(members, min(CLUSTER_GRID, len(members)), replace=False)
        grids[str(c)] = [{"id": int(i), "path": path_of.get(int(i), "?"),
                          "thumb": thumbnail(path_of[int(i)])}
                         for i in pick if int(i) in path_of]
    return grids


def _review(rows: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """The flagged pseudo-labels, lowest confidence first (REVIEW_ROWS of them)."""
    flagged = sorted((r for r in rows.values() if r["needs_review"]), key=lambda r: r["confidence"])
    return [{"id": r["image_id"], "path": r["path"], "label": r["label"],
             "confidence": r["confidence"], "second": r["second_label"], "margin": _fmt(r["margin"]),
             "reason": r["review_reason"], "thumb": thumbnail(r["path"])}
            for r in flagged[:REVIEW_ROWS]]


def _compare(db: Database) -> list[dict[str, Any]]:
    """The latest clustering of each space, scored."""
    out = []
    for other in db.spaces.all():
        run = db.runs.latest("cluster", other.name)
        if run is not None:
            m = run.stats.get("metrics", {})
            out.append({"space": other.name, "method": run.params.get("method"),
                        "k": run.params.get("k"), "run": run.id,
                        "scored": run.stats.get("scored_against"),
                        **{k: _fmt(m.get(k)) for k in ("ami", "ari", "v_measure")}})
    return out


def _evaluation(evaluation: Run | None) -> dict[str, Any] | None:
    if evaluation is None:
        return None
    ev = evaluation.stats
    curve = [{k: _fmt(v) for k, v in c.items()} for c in ev.get("coverage_curve", [])]
    return {"run": evaluation.id, "mode": ev.get("mode"), "accuracy": ev.get("accuracy"),
            "confusion": ev.get("confusion"), "coverage_curve": curve,
            "review_below": ev.get("review_below"), "positive": ev.get("positive")}


def write_report(db: Database, out: str | os.PathLike[str], *, space: str | None = None,
                 run_id: int | None = None, projection: str = "pca", seed: int = 0) -> ReportFile:
    """Build the report and write it atomically; returns its path, size and timings."""
    from plotly.offline import get_plotlyjs

    t0 = time.perf_counter()
    data = collect(db, space, run_id, projection, seed)
    page = TEMPLATE.replace("%%TITLE%%", html.escape(data["title"]))
    page = page.replace("%%PLOTLY%%", get_plotlyjs())
    # </script> inside the JSON would end the script element early
    page = page.replace("%%DATA%%", json.dumps(data).replace("</", "<\\/"))
    path = write_atomically(out, lambda f: f.write(page))
    return ReportFile(path=str(path), bytes=path.stat().st_size, points=data["shown"],
                      images=data["space"]["n"], seconds=time.perf_counter() - t0,
                      space=data["space"]["name"])


TEMPLATE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>%%TITLE%%</title>
<style>
 body{font-family:system-ui,sans-serif;margin:0 1.5em 2em;color:#222}
 h1{font-size:1.4em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
 .note{color:#a00;font-weight:bold} .muted{color:#777}
 .row{display:flex;flex-wrap:wrap;gap:1em} .card{flex:1 1 420px;min-width:360px}
 .plot{height:420px} #map{height:560px}
 #tip{position:fixed;pointer-events:none;background:#fff;border:1px solid #999;padding:4px;font-size:12px;display:none;z-index:10;max-width:260px}
 #tip img{display:block;width:96px;height:96px;object-fit:contain;image-rendering:pixelated}
 .grid{display:flex;flex-wrap:wrap;gap:4px} .grid figure{margin:0;text-align:center;font-size:10px}
 .grid img{width:64px;height:64px;object-fit:contain;image-rendering:pixelated;border:1px solid #ccc}
 table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ddd;padding:3px 6px;text-align:left}
 td img{width:48px;height:48px;object-fit:contain;image-rendering:pixelated}
 label{margin-right:1em}
</style>
<script>%%PLOTLY%%</script>
</head><body>
<h1 id="title"></h1>
<p id="summary"></p>
<h2>Map of the images</h2>
<div>
 <label>colour by <select id="colour">
  <option value="cluster">cluster</option><option value="expert">expert label</option>
  <option value="pseudo">pseudo-label</option><option value="confidence">confidence</option></select></label>
 <label>view <select id="dims"><option value="3">3D</option><option value="2">2D</option></select></label>
 <label>highlight cluster <select id="cluster"><option value="">none</option></select></label>
</div>
<div id="map" class="plot"></div>
<div id="grid-title"></div><div id="grid" class="grid"></div>
<h2>Descriptors compared (latest clustering of each space)</h2>
<div id="compare" class="plot"></div>
<h2>Evaluation</h2>
<div id="eval-summary"></div>
<div class="row"><div class="card"><div id="confusion" class="plot"></div></div>
<div class="card"><div id="coverage" class="plot"></div></div>
<div class="card"><div id="pr" class="plot"></div></div></div>
<h2>Images to review next (lowest confidence first)</h2>
<div id="review"></div>
<div id="tip"></div>
<script type="application/json" id="data">%%DATA%%</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const esc = s => String(s ?? "").replace(/[&<>"']/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"}[c]));
const fmt = v => v === null || v === undefined ? "-" : (typeof v === "number" ? v.toFixed(3) : esc(v));
const P = D.points;
document.getElementById("title").textContent = D.title;
document.getElementById("summary").innerHTML =
  `${D.space.n} images in space <b>${esc(D.space.name)}</b> (${esc(D.space.model)}, ${D.space.dim} dimensions, weights ${esc(D.space.weights)}); ` +
  `${D.shown} shown, projected by ${esc(D.projection)}. ` +
  (D.propagation ? `Pseudo-labels from propagation run ${D.propagation.run}. ` : `<span class="muted">No propagation run yet (vecstore propagate).</span> `) +
  (D.cluster_run ? `Clusters from run ${D.cluster_run.run} (${esc(D.cluster_run.params.method)}, k=${D.cluster_run.params.k}).` : `<span class="muted">No clustering run yet (vecstore cluster).</span>`) +
  (D.space.random ? ` <span class="note">This space uses RANDOM (untrained) weights: its map means nothing.</span>` : "");

const PALETTE = ["#1f77b4","#ff7f0e","#2ca02c","#d62728","#9467bd","#8c564b","#e377c2","#7f7f7f","#bcbd22","#17becf",
  "#393b79","#637939","#8c6d31","#843c39","#7b4173","#3182bd","#e6550d","#31a354","#756bb1","#636363"];
const clusterSel = document.getElementById("cluster");
[...new Set(P.map(p => p.cluster).filter(c => c !== null))].sort((a, b) => a - b)
  .forEach(c => clusterSel.add(new Option(`cluster ${c}`, String(c))));

function traces() {
  const by = document.getElementById("colour").value, three = document.getElementById("dims").value === "3";
  const hl = clusterSel.value;
  const type = three ? "scatter3d" : "scatter";
  const xyz = pts => three ? {x: pts.map(p => p.x[0]), y: pts.map(p => p.x[1]), z: pts.map(p => p.x[2])}
                           : {x: pts.map(p => p.x[0]), y: pts.map(p => p.x[1])};
  const dim = p => hl !== "" && String(p.cluster) !== hl;
  if (by === "confidence") {
    return [{type, mode: "markers", ...xyz(P), customdata: P.map((_, i) => i), hoverinfo: "none",
      marker: {size: three ? 3 : 6, color: P.map(p => p.confidence ?? 1), colorscale: "Viridis", cmin: 0, cmax: 1,
               opacity: hl === "" ? 0.85 : 1, colorbar: {title: "confidence"},
               line: {width: 0}, symbol: P.map(p => p.review ? (three ? "diamond" : "x") : "circle")}, name: "confidence"}];
  }
  const groups = new Map();
  P.forEach((p, i) => { const key = dim(p) ? "other" : String(p[by] ?? "none");
                        if (!groups.has(key)) groups.set(key, []); groups.get(key).push(i); });
  const keys = [...groups.keys()].sort((a, b) => (a === "other") - (b === "other") || a.localeCompare(b, undefined, {numeric: true}));
  return keys.map((key, t) => { const idx = groups.get(key), pts = idx.map(i => P[i]);
    return {type, mode: "markers", name: key === "other" ? "other clusters" : `${by} ${key}`, ...xyz(pts), customdata: idx, hoverinfo: "none",
            marker: {size: three ? 3 : 6, color: key === "other" ? "#ccc" : PALETTE[t % PALETTE.length], opacity: key === "other" ? 0.25 : 0.9}}; });
}
const mapDiv = document.getElementById("map");
function drawMap() {
  Plotly.react(mapDiv, traces(), {margin: {l: 0, r: 0, t: 10, b: 0}, legend: {itemsizing: "constant"},
    scene: {xaxis: {title: "1"}, yaxis: {title: "2"}, zaxis: {title: "3"}}, hovermode: "closest"}, {responsive: true});
}
const tip = document.getElementById("tip");
function attachHover() {
  mapDiv.on("plotly_hover", ev => { const p = P[ev.points[0].customdata]; if (!p) return;
    tip.innerHTML = (p.thumb ? `<img src="${p.thumb}" alt="">` : `<span class="muted">(no thumbnail for this point)</span>`) +
      `<div>#${p.id} ${esc(p.path.split("/").pop())}</div><div>expert: ${fmt(p.expert)} · pseudo: ${fmt(p.pseudo)}</div>` +
      `<div>confidence: ${fmt(p.confidence)} · cluster: ${p.cluster ?? "-"}${p.review ? " · <b>needs review</b>" : ""}</div>`;
    const e = ev.event || {}; tip.style.left = ((e.clientX || 20) + 14) + "px"; tip.style.top = ((e.clientY || 20) + 14) + "px";
    tip.style.display = "block"; });
  mapDiv.on("plotly_unhover", () => { tip.style.display = "none"; });
}
function drawGrid() {
  const c = clusterSel.value, g = document.getElementById("grid"), t = document.getElementById("grid-title");
  if (c === "") { g.innerHTML = ""; t.innerHTML = `<p class="muted">Choose a cluster to see sample images from it.</p>`; return; }
  const items = D.grids[c] || [];
  t.innerHTML = `<p>Cluster ${esc(c)}: ${items.length} sample images</p>`;
  g.innerHTML = items.map(it => `<figure>${it.thumb ? `<img src="${it.thumb}" alt="" title="${esc(it.path)}">` : "?"}<figcaption>#${it.id}</figcaption></figure>`).join("");
}
["colour", "dims"].forEach(id => document.getElementById(id).addEventListener("change", drawMap));
clusterSel.addEventListener("change", () => { drawMap(); drawGrid(); });
drawMap(); attachHover(); drawGrid();

const cmp = D.compare;
if (cmp.length) {
  Plotly.newPlot("compare", ["ami", "ari", "v_measure"].map(m => ({type: "bar", name: m.toUpperCase().replace("_", "-"),
    x: cmp.map(r => `${r.space} (${r.method}, k=${r.k})`), y: cmp.map(r => r[m])})),
    {barmode: "group", yaxis: {range: [0, 1], title: "score"}, margin: {t: 30}, title: {text: `scored against ${esc(cmp[0].scored)}`}});
} else { document.getElementById("compare").outerHTML = `<p class="muted">No clustering yet: vecstore cluster --compare -k K</p>`; }

const E = D.evaluation;
if (E) {
  document.getElementById("eval-summary").innerHTML = `<p>Evaluation run ${E.run} (${esc(E.mode)}): accuracy ${fmt(E.accuracy)}; ` +
    (E.review_below !== null && E.review_below !== undefined ? `needs_review below confidence ${fmt(E.review_below)}.` : "no confidence threshold reaches the target accuracy.") + `</p>`;
  const L = E.confusion.labels;
  Plotly.newPlot("confusion", [{type: "heatmap", z: E.confusion.matrix, x: L.map(String), y: L.map(String), colorscale: "Blues", reversescale: true,
    text: E.confusion.matrix.map(r => r.map(String)), texttemplate: "%{text}", hovertemplate: "truth %{y}, predicted %{x}: %{z}<extra></extra>"}],
    {title: {text: "confusion matrix"}, xaxis: {title: "predicted", type: "category"}, yaxis: {title: "truth", type: "category", autorange: "reversed"}, margin: {t: 40}});
  const C = E.coverage_curve;
  Plotly.newPlot("coverage", [
    {type: "scatter", mode: "lines+markers", name: "accuracy", x: C.map(c => c.threshold), y: C.map(c => c.accuracy)},
    {type: "scatter", mode: "lines+markers", name: "coverage", x: C.map(c => c.threshold), y: C.map(c => c.coverage)}],
    {title: {text: "accuracy and coverage by confidence threshold"}, xaxis: {title: "confidence threshold"}, yaxis: {range: [0, 1.02]}, margin: {t: 40},
     shapes: (E.review_below !== null && E.review_below !== undefined) ? [{type: "line", x0: E.review_below, x1: E.review_below, y0: 0, y1: 1, line: {dash: "dot", color: "#a00"}}] : []});
  const pos = E.positive;
  if (pos && pos.pr_curve) {
    const t = pos.threshold_for_target_recall;
    Plotly.newPlot("pr", [{type: "scatter", mode: "lines", name: "precision-recall", x: pos.pr_curve.recall, y: pos.pr_curve.precision},
      ...(t ? [{type: "scatter", mode: "markers", name: `threshold ${t.threshold.toFixed(3)} (recall ${t.recall.toFixed(3)})`, x: [t.recall], y: [t.precision], marker: {size: 12, color: "#a00"}}] : [])],
      {title: {text: `precision-recall of "${esc(pos.label)}" (recall ${fmt(pos.recall)}, F2 ${fmt(pos.f2)})`}, xaxis: {title: "recall", range: [0, 1.02]}, yaxis: {title: "precision", range: [0, 1.02]}, margin: {t: 40}});
  } else { document.getElementById("pr").outerHTML = `<p class="muted">Binary task? vecstore evaluate --positive LABEL draws the precision-recall curve here.</p>`; }
} else {
  document.getElementById("eval-summary").innerHTML = `<p class="muted">No evaluation yet: vecstore evaluate (hold-out) or vecstore evaluate --truth FILE.csv</p>`;
  ["confusion", "coverage", "pr"].forEach(id => document.getElementById(id).remove());
}

const R = D.review;
document.getElementById("review").innerHTML = R.length ?
  `<p>${D.review_total} images flagged; the ${R.length} least confident:</p><table><tr><th></th><th>id</th><th>path</th><th>pseudo-label</th><th>confidence</th><th>runner-up</th><th>margin</th><th>why</th></tr>` +
  R.map(r => `<tr><td>${r.thumb ? `<img src="${r.thumb}" alt="">` : ""}</td><td>${r.id}</td><td>${esc(r.path)}</td><td>${fmt(r.label)}</td><td>${fmt(r.confidence)}</td><td>${fmt(r.second)}</td><td>${fmt(r.margin)}</td><td>${esc(r.reason)}</td></tr>`).join("") + `</table>`
  : `<p class="muted">Nothing flagged${D.propagation ? "" : " (no propagation run yet)"}.</p>`;
window.vecstoreReportReady = true;
</script>
</body></html>
"""
