"""Images in: `vecstore ingest`, `vecstore embed`, `vecstore import-vectors`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from vecstore.params import (
    DEFAULT_UNLABELED,
    FRAMES,
    EmbedOptions,
    FileLimits,
    ParamError,
    parse_size,
)

from .context import Ctx
from .options import embedding_options, output_option, spaces_option
from .output import emit_json, emit_rows, random_weights_note
from .search import index_details

if TYPE_CHECKING:  # pragma: no cover
    from vecstore.results import IngestReport, SpaceEmbedStats, VectorImport

SHOWN_DUPLICATES = 10
SHOWN_FAILURES = 20


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@spaces_option(default_help="Default: the store's spaces, or resnet18 for a new store.")
@click.option(
    "--labels-from-folders",
    is_flag=True,
    help="Label each image by its parent folder's name (ImageFolder layout).",
)
@click.option(
    "--unlabeled-name",
    "unlabeled_names",
    multiple=True,
    metavar="NAME",
    help=f"Folder names that mean 'no label' (default: {', '.join(DEFAULT_UNLABELED)}).",
)
@click.option(
    "--metadata",
    "metadata_csv",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSV joined per image by a path or file-name column.",
)
@click.option(
    "--frames",
    type=click.Choice(FRAMES),
    default="middle",
    show_default=True,
    help="Of a multi-frame DICOM file: its middle frame, or every frame as an image of its "
    "own, under the path FILE#frame=N (N from 1). A file already in the store stays as read.",
)
@click.option(
    "--follow-links",
    is_flag=True,
    help="Follow symbolic links that lead out of DIRECTORY (by default they are skipped, "
    "and reported).",
)
@click.option(
    "--max-pixels",
    type=click.IntRange(1),
    default=FileLimits.max_pixels,
    show_default=True,
    help="Largest image decoded (width x height); a file declaring more fails unread "
    "(decompression bombs).",
)
@click.option(
    "--max-file-size",
    "max_bytes",
    default=f"{FileLimits.max_bytes / 2**30:g}G",
    show_default=True,
    callback=lambda _ctx, _param, value: _size(value),
    metavar="SIZE",
    help="Largest file read (e.g. 200M, 2G); a larger one fails unread.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Exit 1 if any file failed, or a file or folder was skipped by the scan.",
)
@click.option("--verbose", "-v", is_flag=True, help="List every duplicate and failure.")
@output_option(csv=False)
@embedding_options
@click.pass_obj
def ingest(
    obj: Ctx,
    directory: Path,
    spaces,
    labels_from_folders,
    unlabeled_names,
    metadata_csv,
    frames,
    follow_links,
    max_pixels,
    max_bytes,
    strict,
    verbose,
    fmt,
    embedding: EmbedOptions,
) -> None:
    """Add the images of DIRECTORY (recursive) to the store and embed them.

    Incremental: files already in the store are not embedded again; identical bytes under
    two paths are one image. Bad files are recorded with their reason and skipped; links
    leading out of DIRECTORY, names that are not UTF-8 and folders that cannot be read are
    skipped and reported. Only regular files are read, within --max-file-size and
    --max-pixels, turned upright by their EXIF orientation.

    \b
    Example:
      vecstore ingest data/ --space resnet18 --space hog --labels-from-folders
    """
    if not directory.is_dir():
        raise click.BadParameter(f"{directory} is not a folder", param_hint="DIRECTORY")
    limits = _limits(max_pixels=max_pixels, max_bytes=max_bytes, follow_links=follow_links)
    with obj.open(write=True, create=True) as store:
        rep = store.ingest(
            directory,
            list(spaces) or None,
            labels_from_folders=labels_from_folders,
            unlabeled_names=unlabeled_names or DEFAULT_UNLABELED,
            metadata_csv=metadata_csv,
            embedding=embedding,
            progress=fmt == "table",
            limits=limits,
            frames=frames,
        )
    if fmt == "json":
        emit_json([rep.to_dict()])
    else:
        print_ingest_report(rep, verbose)
    if strict and (rep.failed or rep.skipped):
        raise click.ClickException(_strict_failure(rep))


def _size(value: str) -> int:
    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--max-file-size") from None


def _limits(**values) -> FileLimits:
    """The file limits of the options; one out of range is a usage error naming it."""
    try:
        return FileLimits(**values)
    except ParamError as exc:
        hint = {"max_bytes": "--max-file-size"}.get(exc.field, "--max-pixels")
        raise click.BadParameter(exc.reason, param_hint=hint) from None


def _strict_failure(rep: IngestReport) -> str:
    """'3 files failed, 1 skipped by the scan (--strict)'"""
    parts = [f"{len(rep.failed)} files failed"] if rep.failed else []
    parts += [f"{len(rep.skipped)} skipped by the scan"] if rep.skipped else []
    return ", ".join(parts) + " (--strict)"


def print_ingest_report(rep: IngestReport, verbose: bool) -> None:
    click.echo(
        f"scanned {rep.scanned}: added {rep.added}, duplicates {len(rep.duplicates)}, "
        f"unchanged {rep.unchanged}, changed {rep.changed}, failed {len(rep.failed)}"
        + (f", unavailable {len(rep.unavailable)}" if rep.unavailable else "")
        + (f", skipped {len(rep.skipped)}" if rep.skipped else "")
    )
    _print_some(
        [f"skipped: {p}: {why}" for p, why in rep.skipped],
        None if verbose else SHOWN_FAILURES,
        "skipped files and folders",
    )
    _print_some(
        [f"duplicate: {p} (same bytes as {q})" for p, q in rep.duplicates],
        None if verbose else SHOWN_DUPLICATES,
        "duplicates",
    )
    _print_some(
        [f"failed: {p}: {why}" for p, why in rep.failed],
        None if verbose else SHOWN_FAILURES,
        "failures",
    )
    _print_some(
        [f"unavailable, kept (tried again next time): {p}: {why}" for p, why in rep.unavailable],
        None if verbose else SHOWN_FAILURES,
        "unavailable files",
    )
    if rep.missing:
        click.echo(
            f"  {len(rep.missing)} known files are no longer in the folder: their images and "
            "labels are kept (`vecstore check` lists them)"
        )
    if rep.labels_carried:
        click.echo(
            f"labels kept on {rep.labels_carried} files whose content changed (flagged for "
            "review when their pixels changed: `vecstore labels history PATH`)"
        )
    if rep.labels_added or rep.label_conflicts:
        click.echo(f"labels from folders: {rep.labels_added} added")
        for path, kept, ignored in rep.label_conflicts:
            click.echo(f"  label conflict: {path}: kept {kept!r}, ignored {ignored!r}")
    if rep.metadata_matched or rep.metadata_unmatched:
        click.echo(
            f"metadata: {rep.metadata_matched} images matched, "
            f"{len(rep.metadata_unmatched)} CSV rows matched no image"
        )
    for e in rep.embedded:
        print_embed(e)


def _print_some(lines: list[str], limit: int | None, what: str) -> None:
    shown = lines if limit is None else lines[:limit]
    for line in shown:
        click.echo(f"  {line}")
    if len(shown) < len(lines):
        click.echo(f"  ... {len(lines) - len(shown)} more {what} (--verbose)")


def print_embed(e: SpaceEmbedStats) -> None:
    rate = f", {e.per_second:.1f} images/s" if e.embedded else ""
    if e.shared_with:
        rate += f" (one pass over the files, shared with {', '.join(e.shared_with)})"
    click.echo(
        f"space {e.space}: embedded {e.embedded}, failed {e.failed} in {e.seconds:.1f} s"
        f"{rate} on {e.device} (weights: {e.weights})"
    )
    random_weights_note(e.space, e.weights_random)


@click.command()
@spaces_option(required=True)
@output_option()
@embedding_options
@click.pass_obj
def embed(obj: Ctx, spaces, fmt, embedding: EmbedOptions) -> None:
    """Embed the images already in the store in another space (or catch one up).

    \b
    Example:
      vecstore embed --space resnet18-layer3
    """
    with obj.open(write=True) as store:
        stats = store.embed(list(spaces), embedding=embedding, progress=fmt == "table")
    if fmt == "table":
        for s in stats:
            print_embed(s)
        return
    rows = [s.to_dict() for s in stats]
    emit_rows(rows, list(rows[0]) if rows else [], fmt)


@click.command("import-vectors")
@click.argument("vector_file", type=click.Path(path_type=Path))
@click.option(
    "--space", required=True, help="Name of the space the vectors become (e.g. clip-vit-b32)."
)
@click.option(
    "--paths",
    "paths_file",
    type=click.Path(path_type=Path),
    help="With a .npy file: a text file with one image path per line, in the rows' order.",
)
@click.option(
    "--path-column", default="path", show_default=True, help="Parquet column with the image paths."
)
@click.option(
    "--vector-column", default="vector", show_default=True, help="Parquet column with the vectors."
)
@click.option(
    "--base",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder that relative paths are relative to (default: the current folder).",
)
@output_option()
@click.pass_obj
def import_vectors(
    obj: Ctx, vector_file, space, paths_file, path_column, vector_column, base, fmt
) -> None:
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
    with obj.open(write=True, create=True) as store:
        rep = store.import_vectors(
            vector_file,
            space,
            paths=paths_file,
            path_column=path_column,
            vector_column=vector_column,
            base=base,
            progress=fmt == "table",
        )
    if fmt == "table":
        _print_import(rep)
        return
    row = {k: v for k, v in rep.to_dict().items() if k != "index"}
    row |= {
        "index": rep.index.factory if rep.index else None,
        "recall_at_10": rep.index.recall if rep.index else None,
    }
    emit_rows([row], list(row), fmt)


def _print_import(rep: VectorImport) -> None:
    click.echo(
        f"space {rep.space} ({rep.dim}-d): {rep.rows} rows read, {rep.new_images} new "
        f"images, {rep.existing_images} already known, {rep.skipped_already_imported} "
        f"already imported ({rep.seconds:.1f} s)"
    )
    if rep.index is not None:
        click.echo(f"index: {rep.index.factory}{index_details(rep.index)}")
