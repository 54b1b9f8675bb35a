"""What a labeling budget buys at a given scale, from what the store has measured: embedding
time and cost per device, storage and index, how many labels the budget leaves, the accuracy
to expect at that many labels, and a verdict with every assumption."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .embedders import is_cnn
from .errors import BadInput
from .labeling.labels import classes as store_classes
from .learn.curves import CurveFit
from .learn.guarantee import positives_needed
from .params import FP32, PlanRequest
from .results import ComputeOption, Plan, QualityEstimate, StoragePlan
from .search.choice import choose_index

if TYPE_CHECKING:  # pragma: no cover
    from .db import Database
    from .db.models import Run, Space


@dataclass(frozen=True)
class MeasuredRate:
    """An embedding rate the store measured: images/s over ``images`` images in run ``run``."""

    images_per_s: float
    images: int
    run: int


# (device, precision): device "cpu" or "cuda", precision of the forward pass (PRECISIONS)
RateKey = tuple[str, str]


def measured_throughput(db: Database, space: str) -> dict[RateKey, MeasuredRate]:
    """Best-supported embedding rate per (device, precision) for a space: the run that
    embedded the most images (ingest and embed runs record images/s, device and precision;
    a run from before precision was recorded counts as fp32)."""
    best: dict[RateKey, MeasuredRate] = {}
    for run in db.runs.all():
        if run.status != "done" or run.kind not in ("ingest", "embed"):
            continue
        for e in _embed_entries(run):
            if e.get("space") != space or not e.get("embedded") or not e.get("images_per_s"):
                continue
            dev = "cuda" if str(e.get("device", "cpu")).startswith("cuda") else "cpu"
            key = (dev, str(e.get("precision") or FP32))
            if e["embedded"] > (best[key].images if key in best else 0):
                best[key] = MeasuredRate(float(e["images_per_s"]), int(e["embedded"]), run.id)
    return best


def _embed_entries(run: Run) -> list[dict[str, Any]]:
    """The per-space embedding stats a run records (an ingest run: one per space)."""
    if run.kind == "ingest":
        return run.stats.get("embedded", [])
    st = run.stats
    return [
        {
            "space": run.space,
            "embedded": st.get("embedded", 0),
            "images_per_s": st.get("images_per_s", 0),
            "device": st.get("device", "cpu"),
            "precision": st.get("precision"),  # none recorded before precision was
        }
    ]


def _rate_at(
    rates: dict[RateKey, MeasuredRate], dev: str, sp: Space, assumptions: list[str]
) -> MeasuredRate | None:
    """The rate measured on ``dev`` at the precision the space records; None, said in the
    assumptions, when the store measured that device only at other precisions (a space is
    embedded at its recorded precision only, so their rates do not apply)."""
    if (dev, sp.precision) in rates:
        return rates[(dev, sp.precision)]
    others = sorted(f"{prec} (run {r.run})" for (d, prec), r in rates.items() if d == dev)
    if others:
        name = "CPU" if dev == "cpu" else "GPU"
        assumptions.append(
            f"{name} rates of {sp.name} measured only at {', '.join(others)}, not at the "
            f"{sp.precision} the space records: not used"
        )
    return None


def expected_at(
    points: list[dict[str, Any]], fit: CurveFit | None, m: int, key: str = "accuracy"
) -> tuple[float | None, float | None, str]:
    """(conservative value, optimistic fitted value, how) at m labels: measured points
    interpolated in log(m); beyond the last one, its value (the fit extrapolates)."""
    xs = np.array([p["labels"] for p in points], dtype=np.float64)
    ys = np.array([p[key] for p in points], dtype=np.float64)
    fitted = fit.predict(m) if fit else None
    if m < xs[0]:
        return fitted, fitted, f"fewer labels than measured ({int(xs[0])})"
    if m > xs[-1]:
        return (
            float(ys[-1]),
            fitted,
            f"beyond the measured range ({int(xs[-1])} labels): its last value",
        )
    return (
        float(np.interp(np.log(m), np.log(xs), ys)),
        fitted,
        "interpolated between measured points",
    )


def make_plan(db: Database, req: PlanRequest) -> Plan:
    sp = db.spaces.get(req.space)
    assumptions: list[str] = []
    compute = _compute_options(db, sp, req, assumptions)
    choice = _cheapest_in_time(compute, req.max_hours)
    spent = compute[choice].eur
    left = req.budget_eur - spent
    labels = max(0, math.floor(left / req.eur_per_label + 1e-9)) if left > 0 else 0
    storage = _storage(db, sp, req, assumptions)
    curve_run = db.runs.latest("learning_curve", sp.name)
    classes = curve_run.stats["classes"] if curve_run else store_classes(db)
    quality = _quality(curve_run, labels, classes, assumptions)
    problems = _problems(compute[choice], spent, labels, classes, quality, req)
    needed = _promise_labels(db, req, labels, problems, assumptions)
    return Plan(
        space=sp.name,
        images=req.images,
        budget_eur=req.budget_eur,
        eur_per_label=req.eur_per_label,
        compute=compute,
        compute_choice=choice,
        max_hours=req.max_hours,
        compute_eur=spent,
        labels_affordable=labels,
        storage=storage,
        quality=quality,
        classes=classes,
        target_accuracy=req.target_accuracy,
        feasible=not problems,
        problems=problems,
        conditions=_conditions(compute, choice, labels, quality, storage, req.images),
        assumptions=assumptions,
        promise_labels_needed=needed,
    )


def _promise_labels(
    db: Database, req: PlanRequest, labels: int, problems: list[str], assumptions: list[str]
) -> int | None:
    """Random labels a recall promise for ``req.positive`` needs (vecstore.learn.guarantee's
    rule, the one `evaluate` uses): its positives needed, over the positive share of the
    expert labels. A problem when the budget buys fewer."""
    if req.positive is None:
        return None
    experts = list(db.labels.all().values())
    share = experts.count(req.positive) / len(experts) if experts else 0.0
    if share == 0:
        raise BadInput(
            f"--positive {req.positive!r}: no expert label of that class to measure its share"
        )
    pos = positives_needed(req.target_recall, req.confidence)
    needed = math.ceil(pos / share)
    assumptions.append(
        f"{req.positive!r} is {share:.1%} of the expert labels, as of the images to label; "
        f"a recall promise of {req.target_recall:g} at {req.confidence:.0%} needs {pos} of them"
    )
    if labels < needed:
        problems.append(
            f"a recall promise for {req.positive!r} ({req.target_recall:g} at "
            f"{req.confidence:.0%}) needs {pos} labeled {req.positive!r}, about {needed:,} "
            f"random labels at {share:.1%}; the budget buys {labels:,}"
        )
    return needed


def _compute_options(
    db: Database, sp: Space, req: PlanRequest, assumptions: list[str]
) -> dict[str, ComputeOption]:
    """Embedding time and cost on this CPU (measured) and on a GPU (measured or given), at
    the precision the space records."""
    rates = measured_throughput(db, sp.name)
    compute: dict[str, ComputeOption] = {}
    cpu = _cpu_option(_rate_at(rates, "cpu", sp, assumptions), sp, req, assumptions)
    if cpu is not None:
        compute["cpu"] = cpu
    if is_cnn(sp.name):
        gpu = _gpu_option(_rate_at(rates, "cuda", sp, assumptions), sp, req, assumptions)
        if gpu is not None:
            compute["gpu"] = gpu
    if not compute:
        raise BadInput(_no_rate(sp, rates))
    return compute


def _no_rate(sp: Space, rates: dict[RateKey, MeasuredRate]) -> str:
    """Why a space cannot be planned: no rate measured at the precision it records."""
    others = ", ".join(sorted(f"{p} on {d}" for d, p in rates))
    elsewhere = f" (measured only at {others})" if others else ""
    return (
        f"the store has no measured embedding rate for space {sp.name!r} at its precision "
        f"{sp.precision}{elsewhere}; ingest or embed some images in it first"
    )


def _cpu_option(
    rate: MeasuredRate | None, sp: Space, req: PlanRequest, assumptions: list[str]
) -> ComputeOption | None:
    """Embedding on this machine's CPU at its measured rate (None: not measured)."""
    if rate is None:
        return None
    r = rate.images_per_s
    hours = req.images / r / 3600
    assumptions.append(
        f"this machine's CPU embeds {sp.name} ({sp.precision}) at {r:.1f} images/s (measured, "
        f"run {rate.run}, {rate.images} images); CPU time costs {req.cpu_eur_per_hour:g} EUR/h"
    )
    return ComputeOption(r, True, hours, hours * req.cpu_eur_per_hour)


def _gpu_option(
    rate: MeasuredRate | None, sp: Space, req: PlanRequest, assumptions: list[str]
) -> ComputeOption | None:
    """Embedding on a GPU at --gpu-images-per-s when given, else at the measured rate
    (None, with a hint, when neither)."""
    if req.gpu_images_per_s:
        r, measured = float(req.gpu_images_per_s), False
    elif rate is not None:
        r, measured = rate.images_per_s, True
    else:
        assumptions.append(
            "no GPU throughput: pass --gpu-images-per-s (or ingest once with --device cuda)"
        )
        return None
    hours = req.images / r / 3600
    how = "measured" if measured else "given by --gpu-images-per-s, not measured"
    assumptions.append(
        f"a GPU embeds {sp.name} ({sp.precision}) at {r:.0f} images/s ({how}) and costs "
        f"{req.gpu_eur_per_hour:g} EUR/h"
    )
    return ComputeOption(r, measured, hours, hours * req.gpu_eur_per_hour)


def _cheapest_in_time(compute: dict[str, ComputeOption], max_hours: float) -> str:
    """The cheapest device that finishes within max_hours (else the fastest)."""
    in_time = [d for d in compute if compute[d].hours <= max_hours]
    in_time = in_time or [min(compute, key=lambda d: compute[d].hours)]
    return min(in_time, key=lambda d: (compute[d].eur, compute[d].hours))


def _storage(db: Database, sp: Space, req: PlanRequest, assumptions: list[str]) -> StoragePlan:
    """Vectors, database and index at the planned scale, from this store's bytes per image."""
    n_store = max(1, db.images.counts()["ok"])
    db_bytes = db.path.stat().st_size if db.path.exists() else 0
    per_image_db = max(0.0, (db_bytes - db.vectors.total_bytes()) / n_store)
    index = choose_index(req.images, sp.dim, req.memory_budget)
    assumptions.append(
        f"database: {sp.dim * 4} bytes of vector per image plus {per_image_db:.0f} bytes of rows "
        f"and paths, as measured on this store ({n_store} images)"
    )
    return StoragePlan(
        vectors_bytes=req.images * sp.dim * 4,
        database_bytes=int(req.images * (per_image_db + sp.dim * 4)),
        db_overhead_per_image=round(per_image_db, 1),
        index=index.factory,
        index_bytes=index.bytes,
        index_why=index.why,
    )


def _quality(
    curve_run: Run | None, labels: int, classes: list[str], assumptions: list[str]
) -> QualityEstimate:
    """The accuracy (and recall) to expect at ``labels`` labels, from the learning curve."""
    if curve_run is None:
        assumptions.append(
            "no learning curve yet (`vecstore evaluate --curve`): no accuracy estimate"
        )
        return QualityEstimate()
    st = curve_run.stats
    acc, fitted, how = (None, None, "no labels")
    if labels:
        acc, fitted, how = expected_at(st["points"], CurveFit.from_dict(st.get("fit")), labels)
    q = QualityEstimate(
        curve_run=curve_run.id,
        labels=labels,
        per_class=labels / max(1, len(classes)),
        expected_accuracy=acc,
        fitted_accuracy=fitted,
        how=how,
    )
    if st.get("positive") and labels:
        rec, rfit, _ = expected_at(
            st["points"], CurveFit.from_dict(st.get("recall_fit")), labels, "recall"
        )
        q.positive, q.expected_recall, q.fitted_recall = st["positive"], rec, rfit
    assumptions.append(
        f"accuracy depends on the number of expert labels as on the learning curve of run "
        f"{curve_run.id} ({st['known']} known labels, {st['store_images']} images): more "
        "unlabeled images are assumed to neither help nor hurt"
    )
    return q


def _problems(
    chosen: ComputeOption,
    spent: float,
    labels: int,
    classes: list[str],
    q: QualityEstimate,
    req: PlanRequest,
) -> list[str]:
    problems = []
    if chosen.hours > req.max_hours:
        problems.append(
            f"embedding takes {chosen.hours:.0f} h at best, over --max-hours {req.max_hours:g}"
        )
    if spent > req.budget_eur:
        problems.append(
            f"embedding alone costs {spent:.0f} EUR, over the {req.budget_eur:g} EUR budget"
        )
    if classes and labels < len(classes):
        problems.append(f"{labels} labels cannot cover the {len(classes)} classes")
    acc = q.expected_accuracy
    if acc is not None and acc < req.target_accuracy:
        problems.append(
            f"expected accuracy {acc:.3f} at {labels} labels is under the target "
            f"{req.target_accuracy:g}"
        )
    return problems


def _conditions(
    compute: dict[str, ComputeOption],
    choice: str,
    labels: int,
    q: QualityEstimate,
    storage: StoragePlan,
    images: int,
) -> list[str]:
    conditions = []
    if "cpu" in compute and choice != "cpu":
        gpu, cpu = compute["gpu"], compute["cpu"]
        conditions.append(
            f"embed on a GPU ({gpu.hours:.1f} h, {gpu.eur:.0f} EUR); this CPU would "
            f"need {cpu.hours / 24:.1f} days"
        )
    elif choice == "cpu":
        cpu = compute["cpu"]
        conditions.append(f"embed on this CPU: {cpu.hours:.1f} h ({cpu.hours / 24:.1f} days)")
    conditions.append(
        f"spend the {labels} labels on the images `vecstore suggest` picks, in "
        "rounds, not at random"
    )
    if q.expected_accuracy is not None:
        conditions.append(
            f"about {(1 - q.expected_accuracy) * images:,.0f} pseudo-labels will be "
            "wrong; ship only those not flagged needs_review and have people check "
            "the flagged ones"
        )
    conditions.append(
        f"index: {storage.index} ({storage.index_bytes / 2**30:.1f} GiB): {storage.index_why}"
    )
    return conditions
