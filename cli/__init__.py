"""The `vecstore` command line. Each command parses options, makes one Store call and formats
the result; no SQL or FAISS here."""

from __future__ import annotations

import json
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
        try:
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
        except VecstoreError as exc:
            raise click.ClickException(str(exc)) from exc
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
        try:
            stats = store.embed(list(spaces), weights=weights, device=device,
                                batch_size=batch_size, workers=workers, progress=True)
        except VecstoreError as exc:
            raise click.ClickException(str(exc)) from exc
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
        try:
            res = store.query(path=target, image_id=image_id, space=space, k=k, device=device)
        except VecstoreError as exc:
            raise click.ClickException(str(exc)) from exc
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
        rows = [{**s, "weights": s["weights"] + (" (RANDOM)" if s["weights_random"] else "")}
                for s in data["spaces"]]
        click.echo(table(rows, ["name", "model", "layer", "dim", "vectors", "weights", "index_type"]))
    if data["labels"]:
        click.echo("\nlabels:")
        click.echo(table(data["labels"], ["label", "source", "count"]))
    if show_failed:
        click.echo("\nfailed files:")
        for p, r in failures:
            click.echo(f"  {p}: {r}")


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


@main.command()
@click.option("--space", "spaces", multiple=True, help="Only these spaces (default: all).")
@click.pass_obj
def reindex(obj: Ctx, spaces) -> None:
    """Rebuild the FAISS indexes from the vectors in the database."""
    with obj.open(write=True) as store:
        try:
            done = store.reindex(list(spaces) or None)
        except VecstoreError as exc:
            raise click.ClickException(str(exc)) from exc
    for name, n in done:
        click.echo(f"space {name}: index rebuilt with {n} vectors")


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-data"),
              show_default=True, help="Folder for the demo images.")
@click.option("--space", "spaces", multiple=True, default=("pixels", "hog", "histogram"),
              show_default=True, help=SPACE_HELP)
@click.option("-k", "k", type=click.IntRange(1), default=10, show_default=True)
@click.pass_obj
def demo(obj: Ctx, out: Path, spaces, k: int) -> None:
    """Run vecstore on scikit-learn's digits: write them as PNGs (2 labeled per digit in
    labeled/<digit>/, the rest in unlabeled/, truth in truth.csv), ingest them, show queries.

    \b
    Example:
      vecstore --store demo-data/store demo --out demo-data
    """
    from vecstore.demo import neighbour_agreement, read_truth, write_digits

    counts = write_digits(out, labeled_per_class=2)
    click.echo(f"wrote {counts['images']} digit images to {out}/ ({counts['labeled']} labeled)")
    with obj.open(write=True, create=True) as store:
        try:
            rep = store.ingest(out, list(spaces), labels_from_folders=True, progress=True).to_dict()
        except VecstoreError as exc:
            raise click.ClickException(str(exc)) from exc
        _print_ingest_report(rep, verbose=False)
        truth = read_truth(out / "truth.csv")
        examples = sorted(truth)[:: max(1, len(truth) // 4)][:4]
        click.echo(f"\nsimilar images in space {spaces[0]} (true digit of each neighbour):")
        for path in examples:
            res = store.query(path=path, space=spaces[0], k=k)
            got = " ".join(truth.get(h.path, "?") for h in res.hits)
            click.echo(f"  {Path(path).name} (digit {truth[path]}): {got}")
        rows = []
        for sp in spaces:
            agree = neighbour_agreement(store, sp, truth, k)
            rows.append({"space": sp, "dim": store.get_space(sp).dim, **{m: round(v, 4) for m, v in agree.items()}})
    click.echo(f"\nneighbours with the same digit (all {len(truth)} images as queries):")
    click.echo(table(rows, ["space", "dim", "p@1", f"p@{k}"]))
    click.echo(f"\nstore: {obj.store_path}  (try: vecstore --store {obj.store_path} info)")


__all__ = ["main"]


if __name__ == "__main__":  # python -m vecstore.cli
    main()
