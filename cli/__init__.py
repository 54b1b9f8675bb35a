"""The `vecstore` command line. Each command parses options, makes one Store call and formats
the result; no SQL or FAISS here."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from vecstore import __version__
from vecstore.errors import VecstoreError
from vecstore.scan import DEFAULT_UNLABELED

from .output import emit_rows, format_option, table

SPACE_HELP = (
    "Embedding space: resnet18, resnet50, resnet18-layer3, resnet50-layer3, hog, histogram, "
    "pixels."
)


class Ctx:
    def __init__(self, store: str | None) -> None:
        from vecstore.store import resolve_store_path

        self.store_path: Path = resolve_store_path(store)

    @contextmanager
    def open(self, *, write: bool = False, create: bool = False) -> Iterator:
        from vecstore.store import Store

        try:
            with Store.open(self.store_path, write=write, create=create) as store:
                yield store
        except VecstoreError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--store",
    metavar="PATH",
    default=None,
    help="Store folder (default: $VECSTORE_STORE, else ./.vecstore).",
)
@click.version_option(__version__, prog_name="vecstore")
@click.pass_context
def main(ctx: click.Context, store: str | None) -> None:
    """vecstore: image similarity search and semi-supervised labeling.

    \b
    vecstore ingest scans/ --space resnet18 --labels-from-folders
    vecstore query scans/unlabeled/x.png -k 10
    vecstore info
    """
    ctx.obj = Ctx(store)


def _random_weights_note(space: str, random: bool) -> None:
    if random:
        click.echo(
            f"note: space {space} uses RANDOM (untrained) weights: these similarities come from "
            "an untrained network and carry no meaning beyond tests.",
            err=True,
        )


def _device_options(f):
    f = click.option("--workers", type=click.IntRange(0), default=None,
                     help="Decoding workers (default: up to 2 for CNNs, 4 threads for descriptors).")(f)
    f = click.option("--batch-size", type=click.IntRange(1), default=None,
                     help="Images per batch (default 32 for CNNs).")(f)
    f = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                     show_default=True, help="Where CNNs run.")(f)
    f = click.option(
        "--weights",
        default=None,
        metavar="imagenet|random|PATH",
        help="CNN weights: torchvision ImageNet weights (default, downloaded once to $TORCH_HOME), "
        "a local state-dict file, or `random` (untrained; only when asked explicitly).",
    )(f)
    return f


def _print_ingest_report(rep: dict, verbose: bool) -> None:
    click.echo(
        f"scanned {rep['scanned']}: added {rep['added']}, duplicates {len(rep['duplicates'])}, "
        f"unchanged {rep['unchanged']}, changed {rep['changed']}, failed {len(rep['failed'])}"
    )
    shown = rep["duplicates"] if verbose else rep["duplicates"][:10]
    for d in shown:
        click.echo(f"  duplicate: {d['path']} (same bytes as {d['same_as']})")
    if len(shown) < len(rep["duplicates"]):
        click.echo(f"  ... {len(rep['duplicates']) - len(shown)} more duplicates (--verbose)")
    shown = rep["failed"] if verbose else rep["failed"][:20]
    for f in shown:
        click.echo(f"  failed: {f['path']}: {f['reason']}")
    if len(shown) < len(rep["failed"]):
        click.echo(f"  ... {len(rep['failed']) - len(shown)} more failures (--verbose)")
    if rep["labels_added"] or rep["label_conflicts"]:
        click.echo(f"labels from folders: {rep['labels_added']} added")
        for c in rep["label_conflicts"]:
            click.echo(f"  label conflict: {c['path']}: kept {c['kept']!r}, ignored {c['ignored']!r}")
    if rep["metadata_matched"] or rep["metadata_unmatched"]:
        click.echo(
            f"metadata: {rep['metadata_matched']} images matched, "
            f"{len(rep['metadata_unmatched'])} CSV rows matched no image"
        )
    for e in rep["embedded"]:
        _print_embed(e)


def _print_embed(e: dict) -> None:
    rate = f", {e['images_per_s']:.1f} images/s" if e["embedded"] else ""
    if e.get("shared_with"):
        rate += f" (one pass over the files, shared with {', '.join(e['shared_with'])})"
    click.echo(
        f"space {e['space']}: embedded {e['embedded']}, failed {e['failed']} "
        f"in {e['seconds']:.1f} s{rate} on {e['device']} (weights: {e['weights']})"
    )
    _random_weights_note(e["space"], e["weights_random"])


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--space", "spaces", multiple=True, help=SPACE_HELP + " Repeat for several. "
              "Default: the store's spaces, or resnet18 for a new store.")
@click.option("--labels-from-folders", is_flag=True,
              help="Label each image by its parent folder's name (ImageFolder layout).")
@click.option("--unlabeled-name", "unlabeled_names", multiple=True, metavar="NAME",
              help=f"Folder names that mean 'no label' (default: {', '.join(DEFAULT_UNLABELED)}).")
@click.option("--metadata", "metadata_csv", type=click.Path(dir_okay=False, path_type=Path),
              help="CSV joined per image by a path or file-name column.")
@click.option("--strict", is_flag=True, help="Exit 1 if any file failed.")
@click.option("--verbose", "-v", is_flag=True, help="List every duplicate and failure.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@_device_options
@click.pass_obj
def ingest(obj: Ctx, directory: Path, spaces, labels_from_folders, unlabeled_names, metadata_csv,
           strict, verbose, as_json, weights, device, batch_size, workers) -> None:
    """Add the images of DIRECTORY (recursive) to the store and embed them.

    Incremental: files already in the store are not embedded again; identical bytes under
    two paths are one image. Bad files are recorded with their reason and skipped.

    \b
    Example:
      vecstore ingest data/ --space resnet18 --space hog --labels-from-folders
    """
    if not directory.is_dir():
        raise click.BadParameter(f"{directory} is not a folder", param_hint="DIRECTORY")
    with obj.open(write=True, create=True) as store:
        rep = store.ingest(
            directory,
            list(spaces) or None,
            labels_from_folders=labels_from_folders,
            unlabeled_names=unlabeled_names or DEFAULT_UNLABELED,
            metadata_csv=metadata_csv,
            weights=weights,
            device=device,
            batch_size=batch_size,
            workers=workers,
            progress=not as_json,
        ).to_dict()
    if as_json:
        click.echo(json.dumps(rep, ensure_ascii=False))
    else:
        _print_ingest_report(rep, verbose)
    if strict and rep["failed"]:
        raise click.ClickException(f"{len(rep['failed'])} files failed (--strict)")


@main.command()
@click.option("--space", "spaces", multiple=True, required=True, help=SPACE_HELP)
@_device_options
@click.pass_obj
def embed(obj: Ctx, spaces, weights, device, batch_size, workers) -> None:
    """Embed the images already in the store in another space (or catch one up).

    \b
    Example:
      vecstore embed --space resnet18-layer3
    """
    with obj.open(write=True) as store:
        stats = store.embed(list(spaces), weights=weights, device=device,
                            batch_size=batch_size, workers=workers, progress=True)
    for s in stats:
        _print_embed({"space": s.space, "embedded": s.embedded, "failed": s.failed,
                      "seconds": s.seconds, "images_per_s": s.per_second, "device": s.device,
                      "weights": s.weights, "weights_random": s.weights_random})


@main.command()
@click.argument("target", required=False, type=click.Path(dir_okay=False))
@click.option("--id", "image_id", type=int, default=None, help="Query by image id instead of a file.")
@click.option("-k", "k", type=click.IntRange(1), default=10, show_default=True, help="Neighbours to return.")
@click.option("--space", default=None, help=SPACE_HELP + " Default: the store's first space.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              help="Where a CNN runs to embed an outside file.")
@format_option
@click.pass_obj
def query(obj: Ctx, target, image_id, k, space, device, fmt) -> None:
    """Find the images most similar to TARGET (an image file) or to --id N.

    A file already in the store uses its stored vector and is left out of the results; an
    outside file is embedded with the space's model.

    \b
    Example:
      vecstore query scans/unlabeled/x.png -k 10 --space resnet18 --json
    """
    if (target is None) == (image_id is None):
        raise click.UsageError("give an image file or --id N (exactly one)")
    with obj.open() as store:
        res = store.query(path=target, image_id=image_id, space=space, k=k, device=device)
    rows = [
        {"rank": h.rank, "id": h.id, "path": h.path, "similarity": round(h.similarity, 6),
         "label": h.label, "space": res.space, "weights_random": res.weights_random}
        for h in res.hits
    ]
    if fmt == "table":
        click.echo(f"query: {res.query}  space: {res.space}  weights: {res.weights}")
    _random_weights_note(res.space, res.weights_random)
    cols = ["rank", "id", "path", "similarity", "label"]
    emit_rows(rows, cols if fmt == "table" else [*cols, "space", "weights_random"], fmt)


@main.command()
@click.option("--failed", "show_failed", is_flag=True, help="List the files that failed and why.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.pass_obj
def info(obj: Ctx, show_failed: bool, as_json: bool) -> None:
    """What the store holds: images, spaces (dims, weights, index), labels, schema version."""
    with obj.open() as store:
        data = store.info()
        failures = store.failures() if show_failed else []
    if as_json:
        if show_failed:
            data["failures"] = [{"path": p, "reason": r} for p, r in failures]
        click.echo(json.dumps(data, ensure_ascii=False))
        return
    click.echo(f"store: {data['store']}  (schema {data['schema_version']}, vecstore {data['vecstore_version']})")
    click.echo(f"images: {data['images']}  paths: {data['paths']}  failed: {data['failed']}")
    if data["spaces"]:
        click.echo("\nspaces:")
        rows = [{**s, "weights": s["weights"] + (" (RANDOM)" if s["weights_random"] else ""),
                 "index": _index_cell(s)} for s in data["spaces"]]
        click.echo(table(rows, ["name", "model", "layer", "dim", "vectors", "weights", "index"]))
    if data["labels"]:
        click.echo("\nlabels:")
        click.echo(table(data["labels"], ["label", "source", "count"]))
    if show_failed:
        click.echo("\nfailed files:")
        for p, r in failures:
            click.echo(f"  {p}: {r}")


def _index_cell(sp: dict) -> str:
    """'IVF4096,SQ8 (auto) nprobe=128, recall@10 0.984 on 1000 queries'"""
    if not sp.get("index_type"):
        return "not built yet"
    cell = f"{sp['index_type']} ({sp['index_setting']})"
    params = ", ".join(f"{k}={v}" for k, v in (sp.get("index_params") or {}).items())
    if sp.get("index_recall_sample"):
        cell += f" {params}, recall@10 {sp['index_recall_at_10']:.3f} on {sp['index_recall_sample']} queries"
    elif sp.get("index_recall_at_10") is not None:
        cell += ", exact"
    return cell


@main.command()
@click.pass_obj
def check(obj: Ctx) -> None:
    """Compare the database with the FAISS indexes and the files on disk; exit 1 on problems."""
    with obj.open() as store:
        rep = store.check()
    for n in rep.notes:
        click.echo(f"ok: {n}")
    for w in rep.warnings:
        click.echo(f"warning: {w}")
    for p in rep.problems:
        click.echo(f"PROBLEM: {p}")
    if not rep.ok:
        raise click.ClickException(f"{len(rep.problems)} problem(s) found")
    click.echo("store is consistent")


def _memory_budget(_ctx, _param, value: str | None) -> int | None:
    from vecstore.index import parse_size

    try:
        return None if value is None else parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


index_options = [
    click.option("--index", "index_factory", metavar="FACTORY",
                 help="FAISS index factory string for the space (e.g. Flat, HNSW32, IVF4096,SQ8, "
                      "IVF1024,PQ64); 'auto' goes back to choosing by size and memory budget."),
    click.option("--memory-budget", callback=_memory_budget, metavar="SIZE",
                 help="Memory the index may take (e.g. 4G, 512M); default half the RAM."),
]


def with_index_options(f):
    for opt in reversed(index_options):
        f = opt(f)
    return f


@main.command()
@click.option("--space", "spaces", multiple=True, help="Only these spaces (default: all).")
@with_index_options
@click.pass_obj
def reindex(obj: Ctx, spaces, index_factory, memory_budget) -> None:
    """Rebuild the FAISS indexes from the vectors in the database.

    The index type follows the number of vectors, their dimension and the memory budget
    (exact Flat while small, then IVF with 8-bit, 4-bit or PQ codes), unless --index names
    one. Search parameters are tuned to reach recall@10 >= 0.95 against exact search on 1000
    sampled vectors; `vecstore info` shows what was built and the recall measured.

    \b
    Examples:
      vecstore reindex
      vecstore reindex --space resnet18 --index HNSW32
      vecstore reindex --memory-budget 2G
    """
    with obj.open(write=True) as store:
        done = store.reindex(list(spaces) or None, index=index_factory, memory_budget=memory_budget,
                             progress=True)
    for d in done:
        click.echo(f"space {d['space']}: {d['factory']} rebuilt with {d['vectors']} vectors"
                   + ("" if d["exact"] else f", {_params(d)}, recall@10 {d['recall']:.3f} on {d['sample']} queries"))


def _params(d: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in (d.get("params") or {}).items()) or "default parameters"


@main.command("import-vectors")
@click.argument("vector_file", type=click.Path(path_type=Path))
@click.option("--space", required=True, help="Name of the space the vectors become (e.g. clip-vit-b32).")
@click.option("--paths", "paths_file", type=click.Path(path_type=Path),
              help="With a .npy file: a text file with one image path per line, in the rows' order.")
@click.option("--path-column", default="path", show_default=True, help="Parquet column with the image paths.")
@click.option("--vector-column", default="vector", show_default=True, help="Parquet column with the vectors.")
@click.option("--base", type=click.Path(file_okay=False, path_type=Path),
              help="Folder that relative paths are relative to (default: the current folder).")
@format_option
@click.pass_obj
def import_vectors(obj: Ctx, vector_file, space, paths_file, path_column, vector_column, base, fmt) -> None:
    """Import precomputed embeddings (computed on a GPU cluster, say) as a space.

    VECTOR_FILE is a .npy array (one row per image) with --paths, or a .parquet file with a
    path column and a vector column. The file is checked whole before anything is written;
    rows already imported are skipped, so an interrupted import can simply be run again. The
    space's index is built (and tuned) at the end.

    \b
    Examples:
      vecstore import-vectors emb.npy --paths paths.txt --space clip-vit-b32
      vecstore import-vectors emb.parquet --space clip-vit-b32 --base /data/scans
    """
    from vecstore.importer import VectorFile

    vf = VectorFile(vector_file, paths_file, path_column, vector_column, base)
    with obj.open(write=True, create=True) as store:
        rep = store.import_vectors(vf, space, progress=fmt == "table")
    if fmt != "table":
        row = {k: v for k, v in rep.items() if k != "index"} | {"index": (rep["index"] or {}).get("factory"),
                                                               "recall_at_10": (rep["index"] or {}).get("recall")}
        emit_rows([row], list(row), fmt)
        return
    idx = rep["index"] or {}
    click.echo(f"space {rep['space']} ({rep['dim']}-d): {rep['rows']} rows read, {rep['new_images']} new images, "
               f"{rep['existing_images']} already known, {rep['skipped_already_imported']} already imported "
               f"({rep['seconds']:.1f} s)")
    click.echo(f"index: {idx.get('factory')}" + ("" if idx.get("exact") else
               f", {_params(idx)}, recall@10 {idx.get('recall', 0):.3f} on {idx.get('sample')} queries"))


# ---- labels ---------------------------------------------------------------------------------


@main.group(invoke_without_command=True)
@format_option
@click.pass_context
def labels(ctx: click.Context, fmt: str) -> None:
    """Expert labels: counts per label and source (and the latest pseudo-labels).

    \b
    Examples:
      vecstore labels
      vecstore labels import labels.csv          # columns: path (or sha256), label
      vecstore labels set scans/x.png cancer
      vecstore labels remove scans/x.png
    """
    if ctx.invoked_subcommand is not None:
        return
    with ctx.obj.open() as store:
        rows = store.label_counts()
    if not rows and fmt == "table":
        click.echo("no labels yet (vecstore labels import FILE.csv, or ingest --labels-from-folders)")
        return
    emit_rows(rows, ["label", "source", "count", "needs_review"], fmt)


@labels.command("import")
@click.argument("csv_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--replace", is_flag=True, help="Change expert labels that differ (default: refuse).")
@click.option("--new-class", is_flag=True, help="Accept labels that are not yet a class of the store.")
@click.pass_obj
def labels_import(obj: Ctx, csv_file: Path, replace: bool, new_class: bool) -> None:
    """Import expert labels from CSV_FILE (columns `path` or `sha256`, and `label`).

    All rows or none: an unknown image, an empty label, the same image with two labels, an
    unknown class (a typo?) stops the import with the list of bad rows.
    """
    with obj.open(write=True) as store:
        counts = store.import_labels(csv_file, replace=replace, new_class=new_class)
    click.echo(f"imported {csv_file}: {counts['added']} added, {counts['replaced']} replaced, "
               f"{counts['unchanged']} unchanged")


@labels.command("set")
@click.argument("target")
@click.argument("label")
@click.option("--replace", is_flag=True, help="Change an existing expert label.")
@click.option("--new-class", is_flag=True, help="Accept a label that is not yet a class.")
@click.pass_obj
def labels_set(obj: Ctx, target: str, label: str, replace: bool, new_class: bool) -> None:
    """Set the expert label of TARGET (an image path, sha256 or id)."""
    with obj.open(write=True) as store:
        iid, prev = store.set_label(target, label, replace=replace, new_class=new_class)
    click.echo(f"image {iid}: {label}" + (f" (was {prev})" if prev and prev != label else ""))


@labels.command("remove")
@click.argument("target")
@click.pass_obj
def labels_remove(obj: Ctx, target: str) -> None:
    """Remove the expert label of TARGET (an image path, sha256 or id)."""
    with obj.open(write=True) as store:
        iid, old = store.remove_label(target)
    click.echo(f"image {iid}: label {old} removed")


# ---- clustering, propagation, evaluation, export -------------------------------------------------


def _k_range(_ctx, _param, value: str | None):
    if value is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*\.\.\s*(\d+)\s*", value)
    if not m or not 2 <= int(m.group(1)) <= int(m.group(2)):
        raise click.BadParameter("use LO..HI with 2 <= LO <= HI, e.g. 2..20")
    return int(m.group(1)), int(m.group(2))


def _truth(store, truth: Path | None):
    return store.read_truth(truth) if truth else None


METRIC_COLS = ["ami", "ari", "homogeneity", "completeness", "v_measure", "purity", "entropy", "silhouette"]


@main.command()
@click.option("--space", default=None, help=SPACE_HELP + " Default: the store's first space.")
@click.option("-k", "k", type=click.IntRange(2), default=None, help="Number of clusters.")
@click.option("--k-range", callback=_k_range, default=None, metavar="LO..HI",
              help="Choose k by silhouette (cosine, on a sample) in this range (default 2..20 "
              "when -k is not given).")
@click.option("--method", type=click.Choice(["kmeans", "spectral"]), default="kmeans", show_default=True,
              help="FAISS k-means, or FAISS k-means on the eigenvectors of the normalised k-NN graph.")
@click.option("--neighbors", type=click.IntRange(1), default=10, show_default=True,
              help="k of the k-NN graph (spectral).")
@click.option("--n-init", type=click.IntRange(1), default=10, show_default=True, help="k-means restarts.")
@click.option("--seed", type=int, default=1234, show_default=True)
@click.option("--truth", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Score against this CSV (path, label) instead of the expert labels.")
@click.option("--compare", is_flag=True, help="Cluster every space and print one table.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def cluster(obj: Ctx, space, k, k_range, method, neighbors, n_init, seed, truth, compare, as_json) -> None:
    """Cluster a space and score the clusters against the known labels.

    Reports AMI, ARI, homogeneity, completeness, V-measure, purity, cluster entropy (against
    the expert labels, or --truth) and the cosine silhouette. Each clustering is a stored run.

    \b
    Examples:
      vecstore cluster --space pixels -k 10
      vecstore cluster --space pixels -k 10 --method spectral
      vecstore cluster --compare -k 10
    """
    if k is not None and k_range is not None:
        raise click.BadParameter("give -k or --k-range, not both", param_hint="-k")
    with obj.open(write=True) as store:
        t = _truth(store, truth)
        names = [s.name for s in store.spaces()] if compare else [space]
        results = [store.cluster(n, k=k, k_range=k_range, method=method, n_neighbors=neighbors,
                                 n_init=n_init, seed=seed, truth=t) for n in names]
    if as_json:
        for r in results:
            click.echo(json.dumps(r))
        return
    rows = [{"space": r["space"], "method": r["method"], "k": r["k"], "run": r["run_id"],
             **{m: r["metrics"].get(m) for m in METRIC_COLS}} for r in results]
    click.echo(f"scored against {results[0]['scored_against']} ({results[0]['n_scored']} images)")
    click.echo(table(rows, ["space", "method", "k", "run", *METRIC_COLS]))
    for r in results:
        if r.get("silhouette_by_k"):
            click.echo(f"{r['space']}: k chosen by silhouette: " + ", ".join(
                f"{kk}:{v:.3f}" for kk, v in r["silhouette_by_k"].items()))
        _random_weights_note(r["space"], r["weights_random"])


@main.command()
@click.option("--space", default=None, help=SPACE_HELP + " Default: the store's first space.")
@click.option("-k", "--neighbors", "neighbors", type=click.IntRange(1), default=5, show_default=True,
              help="Neighbours per image in the k-NN graph.")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.99,
              show_default=True, help="Diffusion strength (Zhou et al.).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def propagate(obj: Ctx, space, neighbors, alpha, as_json) -> None:
    """Spread the expert labels to the other images over the k-NN graph of a space.

    Each image gets a pseudo-label, a confidence (1 - entropy/log C), the runner-up label and
    the margin; expert labels are never overwritten. The run and its parameters are stored.

    \b
    Example:
      vecstore propagate --space pixels -k 5
    """
    with obj.open(write=True) as store:
        r = store.propagate(space, n_neighbors=neighbors, alpha=alpha, progress=not as_json)
    if as_json:
        click.echo(json.dumps(r))
        return
    click.echo(f"run {r['run_id']}: space {r['space']}, {r['seeds']} expert labels spread to "
               f"{r['propagated']} images (mean confidence {r['mean_confidence']:.3f})")
    click.echo(table([{"label": k2, "count": v} for k2, v in sorted(r["counts"].items(), key=lambda kv: str(kv[0]))],
                     ["label", "count"]))
    if r["unreached"]:
        click.echo(f"{r['unreached']} images are not connected to any expert label in the graph: "
                   "labeled by a vote of their nearest neighbours and flagged for review")
    _random_weights_note(r["space"], r["weights_random"])


def _print_evaluation(r: dict) -> None:
    head = (f"space {r['space']}: " + (f"against the truth file ({r['scored']} images, propagation run "
            f"{r['propagation_run']})" if r["mode"] == "truth" else
            f"hold-out of the expert labels ({r['repeats']} repeats, {r['hidden_per_repeat']} hidden each, "
            f"accuracy {r['accuracy_mean']:.3f} +/- {r['accuracy_std']:.3f})"))
    click.echo(head)
    click.echo(f"accuracy {r['accuracy']:.4f}  balanced accuracy {r['balanced_accuracy']:.4f}")
    click.echo(table(r["per_class"], ["label", "precision", "recall", "f1", "support"]))
    pos = r.get("positive")
    if pos:
        line = (f"positive class {pos['label']!r}: recall {pos['recall']:.4f}, precision "
                f"{pos['precision']:.4f}, F2 {pos['f2']:.4f}, missed {pos['missed']}")
        if "roc_auc" in pos:
            line += f", ROC-AUC {pos['roc_auc']:.4f}"
        click.echo(line)
        thr = pos.get("threshold_for_target_recall")
        if thr:
            click.echo(f"  to reach recall {pos['target_recall']:.2f}: call {pos['label']!r} when "
                       f"p({pos['label']}) >= {thr['threshold']:.4f} (recall {thr['recall']:.4f}, "
                       f"precision {thr['precision']:.4f})")
    labels_ = r["confusion"]["labels"]
    click.echo("confusion matrix (rows: truth, columns: predicted):")
    click.echo(table([{"truth": t, **{str(c): v for c, v in zip(labels_, row)}}
                      for t, row in zip(labels_, r["confusion"]["matrix"])], ["truth", *map(str, labels_)]))
    click.echo("accuracy and coverage by confidence threshold:")
    click.echo(table([c for c in r["coverage_curve"] if c["threshold"] in (0.0, 0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)],
                     ["threshold", "coverage", "accuracy"]))
    if r["review_below"] is not None:
        nf = r.get("not_flagged") or {}
        click.echo(f"recommended: needs_review below confidence {r['review_below']:.2f} (pseudo-labels "
                   f"above it: {nf.get('accuracy', float('nan')):.4f} accurate, "
                   f"{nf.get('coverage', 0):.1%} of the images; target {r['target_accuracy']:.2f})")
    else:
        click.echo(f"no confidence threshold reaches {r['target_accuracy']:.2f} accuracy: review everything")
    _random_weights_note(r["space"], r["weights_random"])


@main.command()
@click.option("--space", default=None, help=SPACE_HELP + " Default: the store's first space.")
@click.option("--truth", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="CSV (path or sha256, label) of true labels: score the latest propagation against it.")
@click.option("--run", "run_id", type=int, default=None, help="The propagation run to score (with --truth).")
@click.option("--positive", default=None, help="The class whose misses cost most (e.g. cancer).")
@click.option("--target-recall", type=click.FloatRange(0, 1, min_open=True), default=0.95, show_default=True)
@click.option("--target-accuracy", type=click.FloatRange(0, 1, min_open=True), default=0.97, show_default=True,
              help="Accuracy that pseudo-labels not flagged needs_review should reach.")
@click.option("--test-size", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.3,
              show_default=True, help="Share of the expert labels hidden in each hold-out repeat.")
@click.option("--repeats", type=click.IntRange(1), default=5, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--compare", is_flag=True, help="Evaluate every space (hold-out) side by side.")
@click.option("--curve", is_flag=True, help="Accuracy (and recall of --positive) against the number "
              "of labels, fitted a - b m^-c for `vecstore plan`.")
@click.option("--sizes", default=None, metavar="M,M,...", help="Label counts for --curve (default: 8 from "
              "one per class to four fifths of the known labels).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def evaluate(obj: Ctx, space, truth, run_id, positive, target_recall, target_accuracy, test_size,
             repeats, seed, compare, curve, sizes, as_json) -> None:
    """How good are the pseudo-labels? The costly error first.

    Without --truth: repeated stratified hold-out of the expert labels (hide a share,
    propagate from the rest, score the hidden). With --truth FILE.csv: score the latest
    propagation. Accuracy, balanced accuracy, per-class precision/recall/F1, confusion matrix;
    with --positive: recall, precision, F2, ROC-AUC and the threshold that reaches
    --target-recall. Also accuracy and coverage by confidence, and the needs_review threshold.

    \b
    Examples:
      vecstore evaluate --space pixels --truth truth.csv
      vecstore evaluate --positive cancer --target-recall 0.95
    """
    if compare and (truth or run_id):
        raise click.BadParameter("--compare uses the hold-out; drop --truth/--run", param_hint="--compare")
    if curve:
        try:
            size_list = [int(v) for v in sizes.split(",")] if sizes else None
        except ValueError:
            raise click.BadParameter("a comma-separated list of label counts, e.g. 10,20,50",
                                     param_hint="--sizes") from None
        with obj.open(write=True) as store:
            t = _truth(store, truth)
            r = store.learning_curve(space, truth=t, sizes=size_list, repeats=repeats, seed=seed,
                                     positive=positive)
        if as_json:
            click.echo(json.dumps(r))
            return
        click.echo(f"space {r['space']}: learning curve from {r['known']} known labels ({r['source']}), "
                   f"{r['repeats']} draws per size, scored on the labels not drawn")
        cols = ["labels", "per_class", "accuracy", "accuracy_std"] + (["recall", "recall_std"] if positive else [])
        click.echo(table(r["points"], cols))
        f = r["fit"]
        if f:
            click.echo(f"fit: accuracy(m) = {f['a']:.4f} - {f['b']:.4f} * m^-{f['c']:.4f} (rmse {f['rmse']:.4f}); "
                       f"run {r['run_id']} is what `vecstore plan` extrapolates")
        _random_weights_note(r["space"], r["weights_random"])
        return
    with obj.open(write=True) as store:
        t = _truth(store, truth)
        names = [s.name for s in store.spaces()] if compare else [space]
        results = [store.evaluate(n, truth=t, run_id=run_id, positive=positive, target_recall=target_recall,
                                  target_accuracy=target_accuracy, test_size=test_size, repeats=repeats,
                                  seed=seed) for n in names]
    if as_json:
        for r in results:
            click.echo(json.dumps(r))
        return
    if compare:
        rows = [{"space": r["space"], "accuracy": r["accuracy"], "balanced_accuracy": r["balanced_accuracy"],
                 "std": r.get("accuracy_std"), "recall_pos": (r.get("positive") or {}).get("recall"),
                 "f2_pos": (r.get("positive") or {}).get("f2"), "review_below": r["review_below"]} for r in results]
        click.echo(table(rows, ["space", "accuracy", "std", "balanced_accuracy", "recall_pos", "f2_pos", "review_below"]))
        return
    _print_evaluation(results[0])


@main.command()
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="CSV file to write.")
@click.option("--space", default=None, help="Use the latest propagation of this space (default: the latest of all).")
@click.option("--run", "run_id", type=int, default=None, help="Use this propagation run.")
@click.option("--only-unlabeled", is_flag=True, help="Leave out the images with an expert label.")
@click.option("--min-confidence", type=click.FloatRange(0, 1), default=None, help="Leave out rows below it.")
@click.option("--review-below", type=click.FloatRange(0, 1), default=None,
              help="needs_review below this confidence (default: the latest evaluation's recommendation, else 0.3).")
@click.pass_obj
def export(obj: Ctx, out, space, run_id, only_unlabeled, min_confidence, review_below) -> None:
    """Write the pseudo-labels as CSV, one row per image.

    Columns: image_id, path, sha256, label, source (expert/propagated), confidence,
    second_label, margin, cluster, needs_review, review_reason, run_id. Loads with
    pandas.read_csv and no options.

    \b
    Example:
      vecstore export -o pseudo_labels.csv --only-unlabeled
    """
    with obj.open() as store:
        r = store.export(out, space=space, run_id=run_id, only_unlabeled=only_unlabeled,
                         min_confidence=min_confidence, review_below=review_below)
    click.echo(f"wrote {r['rows']} rows to {r['path']} (propagation run {r['run_id']}, space {r['space']}; "
               f"{r['needs_review']} need review, threshold {r['review_below']:.2f} from {r['review_below_from']})")


@main.command()
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="HTML file to write.")
@click.option("--space", default=None, help="Space to map (default: that of the propagation run, else the first).")
@click.option("--run", "run_id", type=int, default=None, help="Propagation run whose pseudo-labels to show.")
@click.option("--projection", type=click.Choice(["pca", "tsne", "umap"]), default="pca", show_default=True,
              help="How the map is drawn (t-SNE and UMAP on the sample of points shown).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.pass_obj
def report(obj: Ctx, out: Path, space, run_id, projection, seed) -> None:
    """Write a self-contained HTML report: a 3D/2D map of the images (coloured by cluster,
    expert label, pseudo-label or confidence, thumbnails on hover, a cluster's images on
    request), the descriptor comparison, the evaluation, and the images to review next.
    Opens offline in any browser.

    \b
    Example:
      vecstore report -o report.html --space pixels
    """
    from vecstore.report import write_report

    with obj.open() as store:
        r = write_report(store, out, space=space, run_id=run_id, projection=projection, seed=seed)
    click.echo(f"wrote {r['path']} ({r['bytes'] / 2**20:.1f} MiB, {r['points']} of {r['images']} images "
               f"on the map, space {r['space']}) in {r['seconds']:.1f} s")


@main.command()
@click.option("-n", "n", type=click.IntRange(1), default=50, show_default=True, help="How many images.")
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="CSV to write (fill its `label` column, then `vecstore labels import` it).")
@click.option("--space", default=None, help=SPACE_HELP + " Default: the store's first space.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.pass_obj
def suggest(obj: Ctx, n: int, out: Path, space, seed: int) -> None:
    """The images whose labels would help most, with why each was picked.

    While some groups of images have no label, the most typical image of each (the largest
    groups first); once they have labels, the least certain pseudo-labels, one per group.
    Never an image already labeled, never two near-duplicates.

    \b
    Example:
      vecstore suggest -n 50 -o to_label.csv
      # fill the label column, then:
      vecstore labels import to_label.csv
    """
    import pandas as pd

    with obj.open() as store:
        rows = store.suggest(n, space, seed=seed)
    cols = ["path", "label", "reason", "pseudo_label", "confidence", "margin", "cluster", "image_id", "space"]
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=cols).to_csv(out, index=False)
    click.echo(f"wrote {len(rows)} images to label to {out} (fill the `label` column, then "
               f"`vecstore labels import {out}`)")


def _bytes(value: str | None) -> int | None:
    if value is None:
        return None
    m = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]?)i?B?\s*", value, re.I)
    if not m:
        raise click.BadParameter("a size such as 16GiB, 512MiB or 2000000000", param_hint="--memory-budget")
    return int(float(m.group(1)) * 1024 ** "_KMGT".index(m.group(2).upper() or "_"))


def _gib(b: float) -> str:
    return f"{b / 2**30:,.2f} GiB"


@main.command()
@click.option("--images", type=click.IntRange(1), required=True, help="How many images to plan for.")
@click.option("--budget-eur", type=click.FloatRange(0), required=True, help="Total budget (compute + labels).")
@click.option("--eur-per-label", type=click.FloatRange(0, min_open=True), required=True)
@click.option("--space", default=None, help=SPACE_HELP + " Default: the store's first space.")
@click.option("--gpu-eur-per-hour", type=click.FloatRange(0), default=2.5, show_default=True)
@click.option("--gpu-images-per-s", type=click.FloatRange(0, min_open=True), default=None,
              help="GPU embedding rate, when the store has not measured one (--device cuda).")
@click.option("--cpu-eur-per-hour", type=click.FloatRange(0), default=0.0, show_default=True)
@click.option("--target-accuracy", type=click.FloatRange(0, 1), default=0.95, show_default=True)
@click.option("--memory-budget", default=None, metavar="SIZE", help="Memory for the index (default 8GiB).")
@click.option("--max-hours", type=click.FloatRange(0, min_open=True), default=48.0, show_default=True,
              help="Embedding must finish within this time: the cheapest device that does is chosen.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def plan(obj: Ctx, images, budget_eur, eur_per_label, space, gpu_eur_per_hour, gpu_images_per_s,
         cpu_eur_per_hour, target_accuracy, memory_budget, max_hours, as_json) -> None:
    """Is labeling N images on a budget feasible, and under which conditions?

    From what the store measured (embedding rate per space and device, database size per
    image, the learning curve of `vecstore evaluate --curve`): embedding time and cost, storage
    and index, how many labels the budget leaves, the accuracy to expect, and a verdict with
    every assumption printed.

    \b
    Example:
      vecstore plan --images 4000000 --budget-eur 5000 --eur-per-label 1.5 --gpu-images-per-s 2000
    """
    from vecstore.plan import make_plan

    with obj.open() as store:
        p = make_plan(store, images=images, budget_eur=budget_eur, eur_per_label=eur_per_label, space=space,
                      gpu_eur_per_hour=gpu_eur_per_hour, gpu_images_per_s=gpu_images_per_s,
                      cpu_eur_per_hour=cpu_eur_per_hour, target_accuracy=target_accuracy,
                      memory_budget=_bytes(memory_budget), max_hours=max_hours)
    if as_json:
        click.echo(json.dumps(p))
        return
    rows = []
    for dev, c in p["compute"].items():
        rows.append({"item": f"embedding on {dev}" + (" (chosen)" if dev == p["compute_choice"] else ""),
                     "value": f"{c['hours']:,.1f} h at {c['images_per_s']:,.1f} images/s"
                              + ("" if c["measured"] else " (given)"), "eur": round(c["eur"], 2)})
    st = p["storage"]
    rows += [{"item": "vectors", "value": _gib(st["vectors_bytes"]), "eur": None},
             {"item": "database", "value": _gib(st["database_bytes"]), "eur": None},
             {"item": "index", "value": f"{st['index']}, {_gib(st['index_bytes'])}", "eur": None},
             {"item": "expert labels", "value": f"{p['labels_affordable']:,} at {p['eur_per_label']:g} EUR",
              "eur": round(p["labels_affordable"] * p["eur_per_label"], 2)}]
    q = p["quality"]
    if q.get("expected_accuracy") is not None:
        fitted = f" (fitted curve: {q['fitted_accuracy']:.3f})" if q.get("fitted_accuracy") is not None else ""
        rows.append({"item": "expected accuracy", "value": f"{q['expected_accuracy']:.3f}{fitted}; {q['how']}", "eur": None})
    if q.get("expected_recall") is not None:
        rows.append({"item": f"expected recall of {q['positive']}", "value": f"{q['expected_recall']:.3f}", "eur": None})
    click.echo(f"plan for {p['images']:,} images in space {p['space']}, budget {p['budget_eur']:g} EUR")
    click.echo(table(rows, ["item", "value", "eur"]))
    click.echo(f"\nverdict: {'FEASIBLE' if p['feasible'] else 'NOT FEASIBLE'}")
    for x in p["problems"]:
        click.echo(f"  problem: {x}")
    click.echo("conditions:")
    for x in p["conditions"]:
        click.echo(f"  - {x}")
    click.echo("assumptions:")
    for x in p["assumptions"]:
        click.echo(f"  - {x}")


@main.command()
@format_option
@click.pass_obj
def runs(obj: Ctx, fmt: str) -> None:
    """The runs recorded in the store: ingest, embed, cluster, propagate, evaluate."""
    with obj.open() as store:
        rows = [{"id": r.id, "kind": r.kind, "space": r.space, "status": r.status,
                 "started": r.started_at.isoformat(timespec="seconds"),
                 "seconds": round(r.seconds, 2) if r.seconds is not None else None,
                 "version": r.code_version, "params": json.dumps(r.params)} for r in store.runs()]
    emit_rows(rows, ["id", "kind", "space", "status", "started", "seconds", "version", "params"], fmt)


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-data"),
              show_default=True, help="Folder for the demo images.")
@click.option("--space", "spaces", multiple=True, default=("pixels", "hog", "histogram"),
              show_default=True, help=SPACE_HELP)
@click.option("-k", "k", type=click.IntRange(1), default=10, show_default=True)
@click.pass_obj
def demo(obj: Ctx, out: Path, spaces, k: int) -> None:
    """Run the whole pipeline on scikit-learn's digits.

    Writes them as PNGs (2 labeled per digit in labeled/<digit>/, the rest in unlabeled/,
    truth in truth.csv), ingests them, shows similar images, then per space clusters
    (k-means, spectral), propagates the labels, evaluates against truth.csv, and exports the
    pseudo-labels of the best space to pseudo_labels.csv.

    \b
    Example:
      vecstore --store demo-data/store demo --out demo-data
    """
    from vecstore.demo import neighbour_agreement, read_truth, write_digits

    counts = write_digits(out, labeled_per_class=2)
    click.echo(f"wrote {counts['images']} digit images to {out}/: {counts['labeled']} labeled in "
               "labeled/<digit>/, the rest in unlabeled/, their true digits in truth.csv")
    with obj.open(write=True, create=True) as store:
        rep = store.ingest(out, list(spaces), labels_from_folders=True, progress=True).to_dict()
        _print_ingest_report(rep, verbose=False)
        truth_paths = read_truth(out / "truth.csv")
        examples = sorted(truth_paths)[:: max(1, len(truth_paths) // 4)][:4]
        click.echo(f"\nsimilar images in space {spaces[0]} (true digit of each neighbour):")
        for path in examples:
            res = store.query(path=path, space=spaces[0], k=k)
            got = " ".join(truth_paths.get(h.path, "?") for h in res.hits)
            click.echo(f"  {Path(path).name} (digit {truth_paths[path]}): {got}")
        truth = store.read_truth(out / "truth.csv")
        rows = []
        for sp in spaces:
            agree = neighbour_agreement(store, sp, truth_paths, k)
            km = store.cluster(sp, k=10, truth=truth)["metrics"]
            spec = store.cluster(sp, k=10, method="spectral", truth=truth)["metrics"]
            store.propagate(sp)
            ev = store.evaluate(sp, truth=truth)
            nf = ev.get("not_flagged") or {}
            rows.append({"space": sp, f"p@{k}": agree[f"p@{k}"], "AMI kmeans": km["ami"],
                         "AMI spectral": spec["ami"], "propagation acc": ev["accuracy"],
                         "review below": ev["review_below"], "unflagged acc": nf.get("accuracy"),
                         "unflagged share": nf.get("coverage")})
        best = max(rows, key=lambda r: r["propagation acc"])["space"]
        exp = store.export(out / "pseudo_labels.csv", space=best)
    click.echo(f"\nthe whole pipeline per space ({counts['labeled']} expert labels, "
               f"{counts['images'] - counts['labeled']} images to label, scored against truth.csv):")
    click.echo(table(rows, list(rows[0])))
    click.echo(f"\npseudo-labels of space {best} written to {exp['path']} ({exp['rows']} rows, "
               f"{exp['needs_review']} flagged needs_review)")
    click.echo(f"store: {obj.store_path}  (try: vecstore --store {obj.store_path} labels)")


__all__ = ["main"]


if __name__ == "__main__":  # python -m vecstore.cli
    main()
