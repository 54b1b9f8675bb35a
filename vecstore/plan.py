"""What a labeling budget buys at a given scale, from what the store has measured."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from .embedders import is_cnn
from .errors import BadInput
from .evaluate import predict_learning_curve
from .index import choose_index

if TYPE_CHECKING:  # pragma: no cover
    from .store import Store


def measured_throughput(store: Store, space: str) -> dict[str, dict[str, float]]:
    """Best-supported embedding rate per device for a space: the run that embedded the most
    images (ingest and embed runs record images/s and device)."""
    best: dict[str, dict[str, float]] = {}
    for run in store.runs():
        if run.status != "done" or run.kind not in ("ingest", "embed"):
            continue
        entries = run.stats.get("embedded", []) if run.kind == "ingest" else [
            {"space": run.space, "embedded": run.stats.get("embedded", 0),
             "images_per_s": run.stats.get("images_per_s", 0), "device": run.stats.get("device", "cpu")}]
        for e in entries:
            if e.get("space") != space or not e.get("embedded") or not e.get("images_per_s"):
                continue
            dev = "cuda" if str(e.get("device", "cpu")).startswith("cuda") else "cpu"
            if e["embedded"] > best.get(dev, {}).get("images", 0):
                best[dev] = {"images_per_s": float(e["images_per_s"]), "images": int(e["embedded"]), "run": run.id}
    return best


def expected_at(points: list[dict[str, Any]], fit: dict[str, float] | None, m: int, key: str = "accuracy"):
    """(conservative value, optimistic fitted value, how) at m labels: measured points
    interpolated in log(m); beyond the last one, its value (the fit extrapolates)."""
    xs = np.array([p["labels"] for p in points], dtype=np.float64)
    ys = np.array([p[key] for p in points], dtype=np.float64)
    fitted = predict_learning_curve(fit, m) if fit else None
    if m < xs[0]:
        return (fitted if fitted is not None else None), fitted, f"fewer labels than measured ({int(xs[0])})"
    if m > xs[-1]:
        return float(ys[-1]), fitted, f"beyond the measured range ({int(xs[-1])} labels): its last value"
    return float(np.interp(np.log(m), np.log(xs), ys)), fitted, "interpolated between measured points"


def make_plan(store: Store, *, images: int, budget_eur: float, eur_per_label: float, space: str | None = None,
              gpu_eur_per_hour: float = 2.5, gpu_images_per_s: float | None = None,
              cpu_eur_per_hour: float = 0.0, target_accuracy: float = 0.95,
              memory_budget: int | None = None, max_hours: float = 48.0) -> dict[str, Any]:
    if images < 1 or budget_eur < 0 or eur_per_label <= 0:
        raise BadInput("--images must be positive, --budget-eur >= 0 and --eur-per-label > 0")
    sp = store.get_space(space)
    assumptions: list[str] = []
    rates = measured_throughput(store, sp.name)
    compute: dict[str, Any] = {}
    if "cpu" in rates:
        r = rates["cpu"]["images_per_s"]
        hours = images / r / 3600
        compute["cpu"] = {"images_per_s": r, "measured": True, "hours": hours, "eur": hours * cpu_eur_per_hour}
        assumptions.append(f"this machine's CPU embeds {sp.name} at {r:.1f} images/s (measured, run "
                           f"{rates['cpu']['run']}, {rates['cpu']['images']} images); CPU time costs "
                           f"{cpu_eur_per_hour:g} EUR/h")
    if is_cnn(sp.name):
        if "cuda" in rates or gpu_images_per_s:
            measured = "cuda" in rates and not gpu_images_per_s
            r = rates["cuda"]["images_per_s"] if measured else float(gpu_images_per_s)
            hours = images / r / 3600
            compute["gpu"] = {"images_per_s": r, "measured": measured, "hours": hours, "eur": hours * gpu_eur_per_hour}
            assumptions.append(f"a GPU embeds {sp.name} at {r:.0f} images/s ("
                               + ("measured" if measured else "given by --gpu-images-per-s, not measured")
                               + f") and costs {gpu_eur_per_hour:g} EUR/h")
        else:
            assumptions.append("no GPU throughput: pass --gpu-images-per-s (or ingest once with --device cuda)")
    if not compute:
        raise BadInput(f"the store has no measured embedding rate for space {sp.name!r}; ingest or embed some "
                       "images in it first")
    # the cheapest way that finishes within max_hours (else the fastest)
    in_time = [d for d in compute if compute[d]["hours"] <= max_hours] or [min(compute, key=lambda d: compute[d]["hours"])]
    choice = min(in_time, key=lambda d: (compute[d]["eur"], compute[d]["hours"]))
    spent = compute[choice]["eur"]
    left = budget_eur - spent
    labels = max(0, math.floor(left / eur_per_label + 1e-9)) if left > 0 else 0

    n_store = max(1, store.info()["images"])
    db_bytes = (store.db_path.stat().st_size if store.db_path.exists() else 0)
    with store.session() as s:
        from sqlalchemy import func, select

        from .models import Vector

        vec_bytes = s.scalar(select(func.coalesce(func.sum(func.length(Vector.vector)), 0))) or 0
    per_image_db = max(0.0, (db_bytes - vec_bytes) / n_store)
    index = choose_index(images, sp.dim, memory_budget)
    storage = {"vectors_bytes": images * sp.dim * 4, "database_bytes": int(images * (per_image_db + sp.dim * 4)),
               "db_overhead_per_image": round(per_image_db, 1), "index": index.factory,
               "index_bytes": index.bytes, "index_why": index.why}
    assumptions.append(f"database: {sp.dim * 4} bytes of vector per image plus {per_image_db:.0f} bytes of rows "
                       f"and paths, as measured on this store ({n_store} images)")

    curve_run = store._latest_run("learning_curve", sp.name)
    quality: dict[str, Any] = {"curve_run": None}
    classes = curve_run.stats["classes"] if curve_run else store.classes()
    if curve_run is not None:
        st = curve_run.stats
        acc, fitted, how = expected_at(st["points"], st.get("fit"), labels) if labels else (None, None, "no labels")
        quality = {"curve_run": curve_run.id, "labels": labels, "per_class": labels / max(1, len(classes)),
                   "expected_accuracy": acc, "fitted_accuracy": fitted, "how": how}
        if st.get("positive") and labels:
            rec, rfit, _ = expected_at(st["points"], st.get("recall_fit"), labels, "recall")
            quality.update(positive=st["positive"], expected_recall=rec, fitted_recall=rfit)
        assumptions.append(
            f"accuracy depends on the number of expert labels as on the learning curve of run {curve_run.id} "
            f"({st['known']} known labels, {st['store_images']} images): more unlabeled images are assumed "
            "to neither help nor hurt")
    else:
        assumptions.append("no learning curve yet (`vecstore evaluate --curve`): no accuracy estimate")

    conditions, problems = [], []
    if compute[choice]["hours"] > max_hours:
        problems.append(f"embedding takes {compute[choice]['hours']:.0f} h at best, over --max-hours {max_hours:g}")
    if spent > budget_eur:
        problems.append(f"embedding alone costs {spent:.0f} EUR, over the {budget_eur:g} EUR budget")
    if classes and labels < len(classes):
        problems.append(f"{labels} labels cannot cover the {len(classes)} classes")
    acc = quality.get("expected_accuracy")
    if acc is not None and acc < target_accuracy:
        problems.append(f"expected accuracy {acc:.3f} at {labels} labels is under the target {target_accuracy:g}")
    if "cpu" in compute and choice != "cpu":
        conditions.append(f"embed on a GPU ({compute['gpu']['hours']:.1f} h, {compute['gpu']['eur']:.0f} EUR); "
                          f"this CPU would need {compute['cpu']['hours'] / 24:.1f} days")
    elif choice == "cpu":
        conditions.append(f"embed on this CPU: {compute['cpu']['hours']:.1f} h ({compute['cpu']['hours'] / 24:.1f} days)")
    conditions.append(f"spend the {labels} labels on the images `vecstore suggest` picks, in rounds, not at random")
    if acc is not None:
        conditions.append(f"about {(1 - acc) * images:,.0f} pseudo-labels will be wrong; ship only those not "
                          "flagged needs_review and have people check the flagged ones")
    conditions.append(f"index: {index.factory} ({index.bytes / 2**30:.1f} GiB): {index.why}")
    return {
        "space": sp.name, "images": images, "budget_eur": budget_eur, "eur_per_label": eur_per_label,
        "compute": compute, "compute_choice": choice, "max_hours": max_hours, "compute_eur": spent, "labels_affordable": labels,
        "storage": storage, "quality": quality, "classes": classes, "target_accuracy": target_accuracy,
        "feasible": not problems, "problems": problems, "conditions": conditions, "assumptions": assumptions,
    }
