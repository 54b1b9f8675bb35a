"""Labels, clustering, propagation, evaluation and export: the Store's labeling half.

Mixed into :class:`vecstore.store.Store`; the estimators it calls (cluster.py, propagate.py,
evaluate.py) take numpy arrays and never touch the store.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import delete, func, insert, select

from .csvfiles import read_user_csv
from .errors import BadInput, UnknownImage, VecstoreError
from .index import normalize
from .models import ClusterAssignment, Image, Label, Prediction, Run, Space

if TYPE_CHECKING:  # pragma: no cover
    from .store import Store

DEFAULT_REVIEW_BELOW = 0.3  # confidence under which a pseudo-label needs review (see evaluate)
DEFAULT_TARGET_ACCURACY = 0.97
SHA_RE = re.compile(r"^[0-9a-f]{64}$")
EXPORT_COLUMNS = [
    "image_id", "path", "sha256", "label", "source", "confidence", "second_label", "margin",
    "cluster", "needs_review", "review_reason", "run_id",
]


class NoRun(VecstoreError):
    pass


def _read_label_csv(path: str | os.PathLike[str], what: str) -> tuple[str, list[tuple[int, str, str]]]:
    """(key column kind 'path'|'sha256', [(csv line, key, label)]) from a CSV with a `label` column."""
    df = read_user_csv(path, what)
    cols = {str(c).strip().lower(): c for c in df.columns}
    key = next((k for k in ("path", "sha256") if k in cols), None)
    if key is None or "label" not in cols:
        raise BadInput(
            f"{what} CSV {path} needs the columns `path` (or `sha256`) and `label`; "
            f"it has: {', '.join(map(str, df.columns)) or 'none'}"
        )
    rows = [(i + 2, str(k).strip(), str(v).strip())
            for i, (k, v) in enumerate(zip(df[cols[key]], df[cols["label"]]))]
    return key, rows


class LabelingMixin:
    # ---- images and labels ---------------------------------------------------------------------
    def resolve_image(self: Store, target: str) -> int:
        """An image id from a path (or identical bytes), a sha256 or an id number."""
        with self.session() as s:
            if os.path.exists(target):
                img = self.image_by_path(target)
                if img is None:
                    from .scan import sha256_bytes

                    with open(target, "rb") as f:
                        img = s.scalar(select(Image).where(Image.sha256 == sha256_bytes(f.read())))
                if img is not None:
                    return img.id
                raise UnknownImage(f"{target} is not in the store (ingest its folder first)")
            if SHA_RE.match(target.lower()):
                iid = s.scalar(select(Image.id).where(Image.sha256 == target.lower()))
                if iid is not None:
                    return iid
            if target.isdigit() and s.get(Image, int(target)) is not None:
                return int(target)
        raise UnknownImage(f"no image {target!r} in the store (give a path, a sha256 or an id)")

    def expert_labels(self: Store) -> dict[int, str]:
        with self.session() as s:
            return dict(s.execute(select(Label.image_id, Label.label)).all())

    def classes(self: Store) -> list[str]:
        return sorted(set(self.expert_labels().values()))

    def _check_new_classes(self: Store, labels: set[str], allow_new: bool) -> None:
        known = set(self.classes())
        new = sorted(labels - known)
        if known and new and not allow_new:
            raise BadInput(
                f"unknown label(s) {', '.join(map(repr, new))}: this store's classes are "
                f"{', '.join(map(repr, sorted(known)))}. Fix the spelling, or pass --new-class "
                "to add a class."
            )

    def set_label(self: Store, target: str, label: str, *, replace: bool = False,
                  new_class: bool = False, source: str = "cli") -> tuple[int, str | None]:
        """Set the expert label of one image; returns (image id, previous label)."""
        self._require_write()
        label = label.strip()
        if not label:
            raise BadInput("the label is empty")
        iid = self.resolve_image(target)
        self._check_new_classes({label}, new_class)
        with self.session() as s:
            row = s.scalar(select(Label).where(Label.image_id == iid))
            previous = row.label if row else None
            if row is not None and row.label != label and not replace:
                raise BadInput(
                    f"image {iid} already has the expert label {row.label!r} (from {row.source}); "
                    "pass --replace to change it"
                )
            if row is None:
                s.add(Label(image_id=iid, label=label, source=source))
            else:
                row.label, row.source = label, source
            s.commit()
        return iid, previous

    def remove_label(self: Store, target: str) -> tuple[int, str]:
        self._require_write()
        iid = self.resolve_image(target)
        with self.session() as s:
            row = s.scalar(select(Label).where(Label.image_id == iid))
            if row is None:
                raise BadInput(f"image {iid} has no expert label to remove")
            old = row.label
            s.delete(row)
            s.commit()
        return iid, old

    def _resolve_csv_rows(self: Store, key: str, rows, csv_path: str) -> tuple[dict[int, str], list[str]]:
        """image id -> label for the rows of a label/truth CSV, and the problems found."""
        problems: list[str] = []
        resolved: dict[int, str] = {}
        first_line: dict[int, int] = {}
        base = os.path.dirname(os.path.abspath(csv_path))
        with self.session() as s:
            for line, k, label in rows:
                if not k:
                    problems.append(f"line {line}: empty {key}")
                    continue
                if not label:
                    problems.append(f"line {line}: empty label for {k}")
                    continue
                if key == "sha256":
                    img = s.scalar(select(Image).where(Image.sha256 == k.lower()))
                else:
                    img = None
                    for cand in ([k] if os.path.isabs(k) else [os.path.join(base, k), os.path.abspath(k)]):
                        img = self.image_by_path(cand)
                        if img is not None:
                            break
                if img is None:
                    problems.append(f"line {line}: {k} is not in the store")
                    continue
                if img.status != "ok":
                    problems.append(f"line {line}: {k} is recorded as a failed file ({img.error})")
                    continue
                if img.id in resolved and resolved[img.id] != label:
                    problems.append(
                        f"line {line}: {k} is labeled {label!r} here but {resolved[img.id]!r} on "
                        f"line {first_line[img.id]} (same image)"
                    )
                    continue
                resolved[img.id] = label
                first_line.setdefault(img.id, line)
        return resolved, problems

    def import_labels(self: Store, csv_path: str | os.PathLike[str], *, replace: bool = False,
                      new_class: bool = False) -> dict[str, int]:
        """Expert labels from a CSV (path or sha256, label): all rows or none."""
        self._require_write()
        key, rows = _read_label_csv(csv_path, "labels")
        if not rows:
            raise BadInput(f"labels CSV {csv_path} has no rows")
        resolved, problems = self._resolve_csv_rows(key, rows, str(csv_path))
        try:
            self._check_new_classes(set(resolved.values()), new_class)
        except BadInput as exc:
            problems.append(str(exc))
        existing = self.expert_labels()
        conflicts = [iid for iid, lab in resolved.items() if iid in existing and existing[iid] != lab]
        if conflicts and not replace:
            problems.append(
                f"{len(conflicts)} images already have another expert label (e.g. image "
                f"{conflicts[0]}: {existing[conflicts[0]]!r} -> {resolved[conflicts[0]]!r}); "
                "pass --replace to change them"
            )
        if problems:
            shown = "\n  ".join(problems[:10])
            more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
            raise BadInput(f"nothing imported from {csv_path}; fix these rows first:\n  {shown}{more}")
        source = f"csv:{os.path.basename(str(csv_path))}"
        counts = {"added": 0, "replaced": 0, "unchanged": 0}
        with self.session() as s:
            for iid, label in resolved.items():
                old = existing.get(iid)
                if old == label:
                    counts["unchanged"] += 1
                elif old is None:
                    s.add(Label(image_id=iid, label=label, source=source))
                    counts["added"] += 1
                else:
                    s.execute(delete(Label).where(Label.image_id == iid))
                    s.add(Label(image_id=iid, label=label, source=source))
                    counts["replaced"] += 1
            s.commit()
        return counts

    def read_truth(self: Store, csv_path: str | os.PathLike[str]) -> dict[int, str]:
        """Ground truth (path or sha256, label) for evaluation; rows must all resolve."""
        key, rows = _read_label_csv(csv_path, "truth")
        resolved, problems = self._resolve_csv_rows(key, rows, str(csv_path))
        problems = [p for p in problems if "is not in the store" not in p]  # others are scored
        if problems:
            raise BadInput(f"truth CSV {csv_path} has bad rows:\n  " + "\n  ".join(problems[:10]))
        if not resolved:
            raise BadInput(f"no row of truth CSV {csv_path} matches an image of the store")
        return resolved

    def label_counts(self: Store) -> list[dict[str, Any]]:
        """Expert labels per label and source, and the pseudo-labels of the latest propagation."""
        with self.session() as s:
            rows = [
                {"label": lab, "source": src, "count": n, "needs_review": None}
                for lab, src, n in s.execute(
                    select(Label.label, Label.source, func.count())
                    .group_by(Label.label, Label.source).order_by(Label.label, Label.source)
                )
            ]
        run = self._latest_run("propagate", None)
        if run is not None:
            table = self._export_rows(run, None, None)
            counts = Counter((r["label"], r["needs_review"]) for r in table if r["source"] == "propagated")
            for lab in sorted({k[0] for k in counts}, key=str):
                n = counts[(lab, True)] + counts[(lab, False)]
                rows.append({"label": lab, "source": f"propagated (run {run.id}, {run.space})",
                             "count": n, "needs_review": counts[(lab, True)]})
        return rows

    # ---- vectors for the estimators --------------------------------------------------------------
    def matrix(self: Store, space: str | None) -> tuple[Space, np.ndarray, np.ndarray]:
        """(space, ids, L2-normalised vectors) of a space."""
        sp = self.get_space(space)
        ids, x = self.vectors(sp)
        if len(ids) == 0:
            raise BadInput(f"space {sp.name!r} has no vectors yet")
        return sp, ids, normalize(x, inplace=True)

    def _latest_run(self: Store, kind: str, space: str | None) -> Run | None:
        with self.session() as s:
            q = select(Run).where(Run.kind == kind, Run.status == "done")
            if space is not None:
                q = q.where(Run.space == space)
            return s.scalar(q.order_by(Run.id.desc()).limit(1))

    def get_run(self: Store, run_id: int, kind: str) -> Run:
        with self.session() as s:
            run = s.get(Run, run_id)
        if run is None or run.kind != kind:
            raise NoRun(f"run {run_id} is not a {kind} run of this store (see `vecstore runs`)")
        return run

    def runs(self: Store) -> list[Run]:
        with self.session() as s:
            return list(s.scalars(select(Run).order_by(Run.id)))

    # ---- clustering ------------------------------------------------------------------------------
    def cluster(self: Store, space: str | None = None, *, k: int | None = None,
                k_range: tuple[int, int] | None = None, method: str = "kmeans",
                n_neighbors: int = 10, n_init: int = 10, seed: int = 1234,
                truth: dict[int, str] | None = None, sample_size: int = 10000) -> dict[str, Any]:
        """Cluster a space, store the assignment as a run, score it against the labels."""
        from .cluster import choose_k, make_clusterer
        from .evaluate import clustering_metrics

        self._require_write()
        sp, ids, x = self.matrix(space)
        scores = None
        if k is None:
            lo, hi = k_range or (2, 20)
            k, scores = choose_k(x, range(lo, hi + 1), method, seed=seed, n_neighbors=n_neighbors,
                                 n_init=n_init, sample_size=min(sample_size, 5000))
        if not 2 <= k < len(ids):
            raise BadInput(f"-k {k} must be between 2 and {len(ids) - 1} (the space has {len(ids)} vectors)")
        params = {"k": k, "k_range": list(k_range) if k_range else None, "method": method,
                  "n_neighbors": n_neighbors, "n_init": n_init, "seed": seed}
        run_id = self._start_run("cluster", sp.name, params)
        try:
            labels = make_clusterer(method, k, n_neighbors=n_neighbors, n_init=n_init, seed=seed).fit(x).labels_
            reference = truth if truth is not None else self.expert_labels()
            known = np.array([int(i) in reference for i in ids])
            y = np.array([reference[int(i)] for i in ids[known]], dtype=object)
            result = {
                "run_id": run_id, "space": sp.name, "method": method, "k": k, "n": len(ids),
                "scored_against": ("truth" if truth is not None else "expert labels"),
                "n_scored": int(known.sum()),
                "sizes": np.bincount(labels, minlength=k).tolist(),
                "silhouette_by_k": scores,
                "weights_random": sp.weights_random,
            }
            metrics = clustering_metrics(y if known.any() else None, labels[known] if known.any() else labels,
                                         None, seed=seed)
            sil = clustering_metrics(None, labels, x, sample_size=sample_size, seed=seed)
            result["metrics"] = {**metrics, **sil}
            with self.session() as s:
                s.execute(insert(ClusterAssignment), [
                    {"run_id": run_id, "image_id": int(i), "cluster": int(c)} for i, c in zip(ids, labels)
                ])
                s.commit()
        except BaseException as exc:
            self._finish_run(run_id, {"error": repr(exc)}, status="failed")
            raise
        self._finish_run(run_id, result)
        return result

    # ---- propagation -----------------------------------------------------------------------------
    def _propagate_arrays(self: Store, x: np.ndarray, ids: np.ndarray, seeds: dict[int, str],
                          n_neighbors: int, alpha: float, gamma: float, progress: bool = False):
        from .propagate import LabelPropagation

        # only seeds with a vector in this space count: the distributions have one column per
        # class that has a seed here, and `classes` must name those columns in order
        in_space = {int(i) for i in ids}
        classes = sorted({lab for i, lab in seeds.items() if i in in_space})
        if not classes:
            raise BadInput("no expert labels yet: add some with `vecstore labels import FILE.csv`, "
                           "`vecstore labels set PATH LABEL` or `ingest --labels-from-folders`")
        if len(classes) < 2:
            raise BadInput(f"only one class ({classes[0]!r}) among the expert labels; propagation "
                           "needs at least two")
        code = {c: j for j, c in enumerate(classes)}
        y = np.array([code[seeds[int(i)]] if int(i) in seeds else -1 for i in ids])
        lp = LabelPropagation(n_neighbors=n_neighbors, alpha=alpha, gamma=gamma, progress=progress).fit(x, y)
        return classes, lp

    def propagate(self: Store, space: str | None = None, *, n_neighbors: int = 5, alpha: float = 0.99,
                  gamma: float = 3.0, progress: bool = False) -> dict[str, Any]:
        """Spread the expert labels over the k-NN graph of a space; store the pseudo-labels."""
        self._require_write()
        if not 0 < alpha < 1:
            raise BadInput(f"--alpha must be between 0 and 1 (exclusive), not {alpha}")
        if n_neighbors < 1:
            raise BadInput("-k must be at least 1")
        t0 = time.perf_counter()
        sp, ids, x = self.matrix(space)
        load_s = time.perf_counter() - t0
        seeds = {i: lab for i, lab in self.expert_labels().items()}
        in_space = set(map(int, ids))
        n_seeds = sum(1 for i in seeds if i in in_space)
        params = {"n_neighbors": n_neighbors, "alpha": alpha, "gamma": gamma,
                  "graph": "kNN, cosine: exact (FAISS) up to 20,000 vectors, else IVF self-join at recall >= 0.95",
                  "class_balanced": True, "solver": "conjugate gradient"}
        run_id = self._start_run("propagate", sp.name, params)
        try:
            classes, lp = self._propagate_arrays(x, ids, seeds, n_neighbors, alpha, gamma, progress)
            t0 = time.perf_counter()
            p = lp.label_distributions_
            has = p.sum(axis=1) > 0
            counts: Counter = Counter()
            unlabeled = np.array([int(i) not in seeds for i in ids])
            with self.session() as s:
                for start in range(0, len(ids), 20000):  # rows built per chunk: bounded memory
                    part = p[start : start + 20000]
                    order = np.argsort(-part, axis=1)[:, :2]
                    rr = np.arange(len(part))
                    best = order[:, 0]
                    second = order[:, 1] if len(classes) > 1 else best
                    margin = part[rr, best] - (part[rr, second] if len(classes) > 1 else 0)
                    recs = []
                    for r in range(len(part)):
                        g = start + r
                        ok = bool(has[g])
                        recs.append({"run_id": run_id, "image_id": int(ids[g]),
                                     "label": classes[best[r]] if ok else None,
                                     "confidence": float(lp.confidence_[g]),
                                     "second_label": classes[second[r]] if ok and len(classes) > 1 else None,
                                     "margin": float(margin[r]) if ok else 0.0,
                                     "reached": bool(lp.reached_[g]),
                                     "distribution": part[r].astype(np.float32).tobytes()})
                        if unlabeled[g]:
                            counts[recs[-1]["label"]] += 1
                    s.execute(insert(Prediction), recs)
                s.commit()
            result = {
                "run_id": run_id, "space": sp.name, "n": len(ids), "classes": classes,
                "seeds": n_seeds, "propagated": int(unlabeled.sum()),
                "counts": dict(counts), "graph": lp.graph_.to_dict(),
                "unreached": int((~lp.reached_).sum()), "no_label": int((~has).sum()),
                "mean_confidence": float(lp.confidence_[unlabeled].mean()) if unlabeled.any() else None,
                "cg_iterations": lp.n_iter_, "weights_random": sp.weights_random,
                "seconds": {"load": round(load_s, 2), **lp.seconds_, "write": round(time.perf_counter() - t0, 2)},
            }
            result["counts"] = {str(k): v for k, v in result["counts"].items()}
        except BaseException as exc:
            self._finish_run(run_id, {"error": repr(exc)}, status="failed")
            raise
        self._finish_run(run_id, result)
        return result

    # ---- evaluation ------------------------------------------------------------------------------
    def evaluate(self: Store, space: str | None = None, *, truth: dict[int, str] | None = None,
                 run_id: int | None = None, positive: str | None = None, target_recall: float = 0.95,
                 target_accuracy: float = DEFAULT_TARGET_ACCURACY, test_size: float = 0.3,
                 repeats: int = 5, seed: int = 0, n_neighbors: int | None = None,
                 alpha: float | None = None) -> dict[str, Any]:
        """Score pseudo-labels: against ``truth`` (the latest or given propagation run), or by
        repeated stratified hold-out of the expert labels (hide, propagate, score the hidden)."""
        from .evaluate import (
            classification_metrics,
            coverage_curve,
            recommend_review_threshold,
            stratified_holdout,
        )

        self._require_write()
        if not 0 < target_recall <= 1:
            raise BadInput("--target-recall must be in (0, 1]")
        sp = self.get_space(space)
        classes = self.classes()
        if positive is not None and positive not in classes:
            raise BadInput(f"--positive {positive!r} is not a label of this store ({', '.join(classes) or 'none'})")
        if truth is not None:
            run = self.get_run(run_id, "propagate") if run_id else self._latest_run("propagate", sp.name)
            if run is None:
                raise NoRun(f"no propagation run for space {sp.name!r} yet: run `vecstore propagate --space {sp.name}`")
            sp = self.get_space(run.space)
            run_classes = run.stats["classes"]
            seeds = self.expert_labels()
            with self.session() as s:
                preds = s.execute(select(Prediction.image_id, Prediction.label, Prediction.confidence,
                                         Prediction.distribution).where(Prediction.run_id == run.id)).all()
            scored = [(i, lab, conf, dist) for i, lab, conf, dist in preds if i in truth and i not in seeds]
            if not scored:
                raise BadInput("no unlabeled image of the propagation run appears in the truth file")
            unknown = sorted({truth[i] for i, *_ in scored} - set(run_classes))
            if unknown:
                raise BadInput(f"truth labels {unknown} are not classes of the propagation ({run_classes})")
            y_true = [truth[i] for i, *_ in scored]
            y_pred = [lab for _, lab, _, _ in scored]
            conf = np.array([c for _, _, c, _ in scored])
            proba = np.stack([np.frombuffer(d, np.float32) for *_, d in scored])
            mode, details = "truth", {"propagation_run": run.id, "scored": len(scored)}
            classes = run_classes
        else:
            seeds = self.expert_labels()
            _, ids, x = self.matrix(sp.name)
            pos_of = {int(i): r for r, i in enumerate(ids)}
            lab_ids = np.array(sorted(i for i in seeds if i in pos_of))
            labels = np.array([seeds[i] for i in lab_ids], dtype=object)
            if len(lab_ids) < 2 * max(len(classes), 1) or min(Counter(labels).values()) < 2:
                raise BadInput(
                    "hold-out evaluation needs at least 2 expert labels per class (one to keep, one "
                    "to hide); add labels or give --truth FILE.csv"
                )
            # the parameters of the space's latest propagation, so the score is about them
            last = (self._latest_run("propagate", sp.name) or Run(params={})).params
            k = n_neighbors if n_neighbors is not None else last.get("n_neighbors", 5)
            a = alpha if alpha is not None else last.get("alpha", 0.99)
            g = last.get("gamma", 3.0)
            y_true, y_pred, conf_l, proba_l, accs = [], [], [], [], []
            for train, test in stratified_holdout(labels, test_size, repeats, seed):
                kept = {int(lab_ids[j]): labels[j] for j in train}
                cls, lp = self._propagate_arrays(x, ids, kept, k, a, g)
                rows = [pos_of[int(lab_ids[j])] for j in test]
                p = np.zeros((len(rows), len(classes)))
                for cj, c in enumerate(cls):
                    p[:, classes.index(c)] = lp.label_distributions_[rows, cj]
                pred = [classes[r.argmax()] if r.sum() > 0 else None for r in p]
                truth_rep = [labels[j] for j in test]
                accs.append(float(np.mean([a_ == b_ for a_, b_ in zip(truth_rep, pred)])))
                y_true += truth_rep
                y_pred += pred
                conf_l.append(lp.confidence_[rows])
                proba_l.append(p)
            conf, proba = np.concatenate(conf_l), np.concatenate(proba_l)
            mode = "holdout"
            details = {"repeats": repeats, "test_size": test_size, "n_neighbors": k, "alpha": a, "gamma": g,
                       "hidden_per_repeat": len(y_true) // max(repeats, 1),
                       "accuracy_per_repeat": accs,
                       "accuracy_mean": float(np.mean(accs)), "accuracy_std": float(np.std(accs))}
        try:
            report = classification_metrics(y_true, y_pred, classes=list(classes), proba=proba,
                                             positive=positive, target_recall=target_recall)
        except ValueError as exc:
            raise BadInput(str(exc)) from exc
        correct = np.array([t == p for t, p in zip(y_true, y_pred)])
        curve = coverage_curve(correct, conf)
        recommended = recommend_review_threshold(curve, target_accuracy)
        result = {
            "space": sp.name, "mode": mode, **details, **report, "coverage_curve": curve,
            "target_accuracy": target_accuracy, "review_below": recommended,
            "weights_random": sp.weights_random,
        }
        if recommended is not None:
            kept = conf >= recommended
            result["not_flagged"] = {"coverage": float(kept.mean()),
                                     "accuracy": float(correct[kept].mean()) if kept.any() else None}
        eval_run = self._start_run("evaluate", sp.name, {
            "mode": mode, "positive": positive, "target_recall": target_recall,
            "target_accuracy": target_accuracy, "test_size": test_size, "repeats": repeats, "seed": seed})
        self._finish_run(eval_run, result)
        result["run_id"] = eval_run
        return result

    def learning_curve(self: Store, space: str | None = None, *, truth: dict[int, str] | None = None,
                       sizes: list[int] | None = None, repeats: int = 5, seed: int = 0,
                       positive: str | None = None, n_neighbors: int = 5, alpha: float = 0.99) -> dict[str, Any]:
        """Accuracy (and recall of ``positive``) against the number of labels: for each size m,
        ``repeats`` random draws of m known labels (the expert labels, or ``truth``; at least one
        per class), propagated and scored on the other known labels. Fitted a - b m^-c so that
        `vecstore plan` can extrapolate; stored as a run."""
        from .evaluate import fit_learning_curve

        self._require_write()
        sp, ids, x = self.matrix(space)
        pool = truth if truth is not None else self.expert_labels()
        row_of = {int(i): r for r, i in enumerate(ids)}
        known = np.array(sorted(i for i in pool if i in row_of), dtype=np.int64)
        labels = np.array([pool[int(i)] for i in known], dtype=object)
        classes = sorted(set(labels))
        if len(classes) < 2 or len(known) < len(classes) + 2:
            raise BadInput("a learning curve needs known labels of at least two classes and a few "
                           "more images than classes (expert labels, or --truth FILE.csv)")
        if positive is not None and positive not in classes:
            raise BadInput(f"--positive {positive!r} is not one of the labels ({', '.join(classes)})")
        top = len(known) - max(1, len(known) // 5)  # always keep a fifth to score on
        if sizes is None:
            sizes = sorted({int(round(v)) for v in np.geomspace(len(classes), top, 8)})
        sizes = [m for m in sizes if len(classes) <= m <= top]
        if not sizes:
            raise BadInput(f"no size between {len(classes)} (one per class) and {top} labels")
        rng = np.random.default_rng(seed)
        points = []
        for m in sizes:
            accs, recalls = [], []
            for _ in range(repeats):
                first = [rng.choice(np.flatnonzero(labels == c)) for c in classes]
                rest = rng.permutation(np.setdiff1d(np.arange(len(known)), first))
                chosen = np.concatenate([first, rest[: m - len(first)]]).astype(int)
                hidden = np.setdiff1d(np.arange(len(known)), chosen)
                seeds = {int(known[j]): labels[j] for j in chosen}
                cls, lp = self._propagate_arrays(x, ids, seeds, n_neighbors, alpha, 3.0)
                rows = [row_of[int(known[j])] for j in hidden]
                pred = np.array([cls[t] if t >= 0 else None for t in lp.transduction_[rows]], dtype=object)
                truth_h = labels[hidden]
                accs.append(float((pred == truth_h).mean()))
                if positive is not None and (truth_h == positive).any():
                    recalls.append(float((pred[truth_h == positive] == positive).mean()))
            points.append({"labels": m, "per_class": round(m / len(classes), 3),
                           "accuracy": float(np.mean(accs)), "accuracy_std": float(np.std(accs)),
                           "recall": float(np.mean(recalls)) if recalls else None,
                           "recall_std": float(np.std(recalls)) if recalls else None})
        m_arr = np.array([p["labels"] for p in points])
        fit = fit_learning_curve(m_arr, np.array([p["accuracy"] for p in points]),
                                 np.array([p["accuracy_std"] for p in points]))
        rfit = None
        if positive is not None and all(p["recall"] is not None for p in points):
            rfit = fit_learning_curve(m_arr, np.array([p["recall"] for p in points]),
                                      np.array([p["recall_std"] for p in points]))
        result = {"space": sp.name, "source": "truth" if truth is not None else "expert labels",
                  "known": len(known), "classes": classes, "repeats": repeats, "points": points,
                  "fit": fit, "positive": positive, "recall_fit": rfit, "store_images": len(ids),
                  "weights_random": sp.weights_random}
        run_id = self._start_run("learning_curve", sp.name, {"sizes": sizes, "repeats": repeats, "seed": seed,
                                                             "positive": positive, "n_neighbors": n_neighbors,
                                                             "alpha": alpha})
        self._finish_run(run_id, result)
        result["run_id"] = run_id
        return result

    # ---- active learning ---------------------------------------------------------------------
    def suggest(self: Store, n: int, space: str | None = None, *, seed: int = 0,
                n_neighbors: int = 5, alpha: float = 0.99) -> list[dict[str, Any]]:
        """The n images whose labels would help most (see vecstore.active.suggest)."""
        from .active import suggest as pick

        if n < 1:
            raise BadInput("-n must be at least 1")
        sp, ids, x = self.matrix(space)
        seeds = self.expert_labels()
        row_of = {int(i): r for r, i in enumerate(ids)}
        labeled = np.array(sorted(row_of[i] for i in seeds if i in row_of), dtype=np.int64)
        margin = labels_pred = conf = None
        if len(set(seeds[int(ids[r])] for r in labeled)) >= 2:
            classes, lp = self._propagate_arrays(x, ids, seeds, n_neighbors, alpha, 3.0)
            p = np.sort(lp.label_distributions_, axis=1)
            margin = p[:, -1] - p[:, -2]
            labels_pred = [classes[t] if t >= 0 else None for t in lp.transduction_]
            conf = lp.confidence_
        with self.session() as s:
            path_of = dict(s.execute(select(Image.id, Image.path)).all())
        out = []
        for r, reason, cluster in pick(x, labeled, n, margin=margin, seed=seed):
            iid = int(ids[r])
            out.append({"image_id": iid, "path": path_of.get(iid), "label": "", "reason": reason,
                        "pseudo_label": labels_pred[r] if labels_pred else None,
                        "confidence": round(float(conf[r]), 6) if conf is not None else None,
                        "margin": round(float(margin[r]), 6) if margin is not None else None,
                        "cluster": cluster, "space": sp.name})
        return out

    # ---- export ----------------------------------------------------------------------------------
    def _review_rules(self: Store, run: Run, review_below: float | None) -> tuple[float, str, dict | None]:
        """(confidence threshold, where it comes from, positive-class rule or None) for the
        pseudo-labels of a propagation run: from the latest evaluation made after that run
        (an older one scored other pseudo-labels), else the default."""
        ev = self._latest_run("evaluate", run.space)
        if ev is not None and ev.id < run.id:
            ev = None
        positive_rule = None
        if ev is not None:
            pos = ev.stats.get("positive") or {}
            thr = pos.get("threshold_for_target_recall")
            if thr:
                positive_rule = {"label": pos["label"], "threshold": thr["threshold"],
                                 "target_recall": pos.get("target_recall")}
        if review_below is not None:
            return review_below, "given", positive_rule
        if ev is not None and ev.stats.get("review_below") is not None:
            return float(ev.stats["review_below"]), f"evaluate run {ev.id}", positive_rule
        return DEFAULT_REVIEW_BELOW, "default", positive_rule

    def _export_rows(self: Store, run: Run, review_below: float | None, cluster_run: Run | None) -> list[dict]:
        threshold, _, positive_rule = self._review_rules(run, review_below)
        classes = run.stats.get("classes", [])
        pos_j = classes.index(positive_rule["label"]) if positive_rule and positive_rule["label"] in classes else None
        seeds = self.expert_labels()
        with self.session() as s:
            images = s.execute(select(Image.id, Image.path, Image.sha256).where(Image.status == "ok")
                               .order_by(Image.id)).all()
            preds = {r.image_id: r for r in s.execute(select(Prediction).where(Prediction.run_id == run.id)).scalars()}
            clusters = dict(s.execute(select(ClusterAssignment.image_id, ClusterAssignment.cluster)
                                      .where(ClusterAssignment.run_id == cluster_run.id)).all()) if cluster_run else {}
        rows = []
        for iid, path, sha in images:
            row = {"image_id": iid, "path": path, "sha256": sha, "cluster": clusters.get(iid), "run_id": run.id}
            pr = preds.get(iid)
            if iid in seeds:
                row.update(label=seeds[iid], source="expert", confidence=1.0, second_label=None,
                           margin=None, needs_review=False, review_reason="")
            elif pr is None:
                row.update(label=None, source="none", confidence=0.0, second_label=None, margin=None,
                           needs_review=True, review_reason=f"not in propagation run {run.id} (run `vecstore propagate` again)")
            else:
                reasons = []
                if pr.label is None:
                    reasons.append("no expert label reaches it")
                elif not pr.reached:
                    reasons.append("not connected to an expert label in the k-NN graph (neighbour vote)")
                if pr.confidence < threshold:
                    reasons.append(f"confidence {pr.confidence:.3f} < {threshold:.3f}")
                if pos_j is not None and pr.label != positive_rule["label"]:
                    p_pos = float(np.frombuffer(pr.distribution, np.float32)[pos_j])
                    if p_pos >= positive_rule["threshold"]:
                        reasons.append(f"possible {positive_rule['label']}: p={p_pos:.3f} >= "
                                       f"{positive_rule['threshold']:.3f} (recall target)")
                row.update(label=pr.label, source="propagated", confidence=round(pr.confidence, 6),
                           second_label=pr.second_label, margin=round(pr.margin, 6),
                           needs_review=bool(reasons), review_reason="; ".join(reasons))
            rows.append(row)
        return rows

    def export(self: Store, out: str | os.PathLike[str], *, space: str | None = None,
               run_id: int | None = None, only_unlabeled: bool = False,
               min_confidence: float | None = None, review_below: float | None = None) -> dict[str, Any]:
        """Write one CSV row per image: label, source, confidence, runner-up, cluster, review flag."""
        import pandas as pd

        if run_id is not None:
            run = self.get_run(run_id, "propagate")
        else:
            run = self._latest_run("propagate", self.get_space(space).name if space else None)
            if run is None:
                raise NoRun("no propagation run yet: run `vecstore propagate` first")
        cluster_run = self._latest_run("cluster", run.space)
        threshold, origin, positive_rule = self._review_rules(run, review_below)
        rows = self._export_rows(run, review_below, cluster_run)
        if only_unlabeled:
            rows = [r for r in rows if r["source"] != "expert"]
        if min_confidence is not None:
            rows = [r for r in rows if r["confidence"] >= min_confidence]
        df = pd.DataFrame(rows, columns=EXPORT_COLUMNS)
        df["cluster"] = df["cluster"].astype("Int64")
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.name, suffix=".tmp")
        os.close(fd)
        try:
            df.to_csv(tmp, index=False)
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return {"path": str(out), "rows": len(df), "run_id": run.id, "space": run.space,
                "cluster_run_id": cluster_run.id if cluster_run else None,
                "review_below": threshold, "review_below_from": origin, "positive_rule": positive_rule,
                "needs_review": int(df["needs_review"].sum()) if len(df) else 0,
                "by_source": {str(k): int(v) for k, v in df["source"].value_counts().items()}}
