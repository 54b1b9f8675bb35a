"""The store itself: `vecstore info`, `vecstore check`, `vecstore runs`."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING

import click

from vecstore.params import FP32

from .context import Ctx
from .options import output_option
from .output import emit_json, emit_rows, table

if TYPE_CHECKING:  # pragma: no cover
    from vecstore.results import SpaceSummary


@click.command()
@click.option("--failed", "show_failed", is_flag=True, help="List the files that failed and why.")
@output_option(csv=False)
@click.pass_obj
def info(obj: Ctx, show_failed: bool, fmt: str) -> None:
    """What the store holds: images, spaces (dims, weights, transform, index), labels, schema
    version."""
    with obj.open() as store:
        data = store.info(failures=show_failed)
    if fmt == "json":
        emit_json([data.to_dict()])
        return
    click.echo(
        f"store: {data.store}  (schema {data.schema_version}, vecstore {data.vecstore_version})"
    )
    click.echo(f"images: {data.images}  paths: {data.paths}  failed: {data.failed}")
    if data.spaces:
        click.echo("\nspaces:")
        rows = [
            {
                "name": s.name,
                "model": s.model,
                "layer": s.layer,
                "dim": s.dim,
                "vectors": s.vectors,
                "weights": s.weights
                + (" (RANDOM)" if s.weights_random else "")
                + ("" if s.precision == FP32 else f", {s.precision}"),
                "transform": s.transform,
                "index": _index_cell(s),
            }
            for s in data.spaces
        ]
        columns = ["name", "model", "layer", "dim", "vectors", "weights", "transform", "index"]
        click.echo(table(rows, columns))
    if data.labels:
        click.echo("\nlabels:")
        click.echo(table([asdict(c) for c in data.labels], ["label", "source", "count"]))
    if data.metadata:
        click.echo("\nmetadata columns:")
        rows = [
            {**asdict(c), "identifying": "yes: left out of exports unless named" * c.identifying}
            for c in data.metadata
        ]
        click.echo(table(rows, ["name", "images", "values", "identifying"]))
    if data.failures is not None:
        click.echo("\nfailed files:")
        for p, r in data.failures:
            click.echo(f"  {p}: {r}")


def _index_cell(sp: SpaceSummary) -> str:
    """'IVF4096,SQ8 (auto) nprobe=128, recall@10 0.984 on 1000 queries'"""
    if not sp.index_type:
        return "not built yet"
    cell = f"{sp.index_type} ({sp.index_setting})"
    params = ", ".join(f"{k}={v}" for k, v in (sp.index_params or {}).items())
    if sp.index_recall_sample:
        cell += (
            f" {params}, recall@10 {sp.index_recall_at_10:.3f} on {sp.index_recall_sample} queries"
        )
    elif sp.index_recall_at_10 is not None:
        cell += ", exact"
    return cell


@click.command()
@click.option(
    "--fix",
    is_flag=True,
    help="First repair what is only a cache: remove stray temporary files, rebuild index files "
    "that cannot be trusted. The database is not changed.",
)
@output_option(csv=False)
@click.pass_obj
def check(obj: Ctx, fix: bool, fmt: str) -> None:
    """Compare the database with the FAISS indexes and the files on disk; exit 1 on problems."""
    from vecstore.store import check_at

    rep = check_at(obj.store_path, fix=fix)
    if fmt == "json":
        emit_json([rep.to_dict()])
    else:
        for f in rep.fixed:
            click.echo(f"fixed: {f}")
        for n in rep.notes:
            click.echo(f"ok: {n}")
        for w in rep.warnings:
            click.echo(f"warning: {w}")
        for p in rep.problems:
            click.echo(f"PROBLEM: {p}")
    if not rep.ok:
        raise click.ClickException(f"{len(rep.problems)} problem(s) found")
    if fmt == "table":
        click.echo("store is consistent")


@click.command()
@output_option()
@click.pass_obj
def runs(obj: Ctx, fmt: str) -> None:
    """The runs recorded in the store: ingest, embed, cluster, propagate, evaluate."""
    with obj.open() as store:
        rows = [
            {
                "id": r.id,
                "kind": r.kind,
                "space": r.space,
                "status": r.status,
                "started": r.started_at.isoformat(timespec="seconds"),
                "seconds": round(r.seconds, 2) if r.seconds is not None else None,
                "version": r.code_version,
                "params": json.dumps(r.params),
            }
            for r in store.runs()
        ]
    emit_rows(
        rows, ["id", "kind", "space", "status", "started", "seconds", "version", "params"], fmt
    )
