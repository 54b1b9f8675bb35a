"""Turning the images of the store into vectors of a space: the embedder a space is made
with (held to the weights it was created with), and the embedding of the images a space
lacks, batch by batch, each batch durable on its own."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING

from ..embedders import NAMES, Embedder, get_embedder, is_cnn
from ..errors import BadInput, UnknownSpace
from ..params import EmbedOptions
from ..progress import progress_bar
from ..results import SpaceEmbedStats

if TYPE_CHECKING:  # pragma: no cover
    from ..db import Database


def embedder_for(db: Database, name: str, options: EmbedOptions | None = None) -> Embedder:
    """Build the embedder of a space, holding an existing space to the weights and the
    precision it was made with (``options.precision`` None: the recorded one, else fp32);
    weights and precision are ignored for the descriptors, which take none and compute in
    fp32."""
    if name not in NAMES:
        raise UnknownSpace(f"unknown space {name!r}; choose one of: {', '.join(NAMES)}")
    options = options or EmbedOptions()
    existing = db.spaces.by_name(name)
    weights, precision = (options.weights, options.precision) if is_cnn(name) else (None, None)
    if existing is not None and is_cnn(name):
        weights = _recorded_weights(name, existing.weights, weights)
    if existing is not None:
        precision = _recorded_precision(name, existing.precision, precision)
    held = replace(options, weights=weights, precision=precision)
    emb = get_embedder(name, held)
    if existing is not None:
        if existing.dim != emb.info.dim:
            raise BadInput(
                f"space {name!r} has dim {existing.dim}, the embedder gives {emb.info.dim}"
            )
        if existing.weights_sha256 and emb.info.weights_sha256 != existing.weights_sha256:
            raise BadInput(
                f"the weights file of space {name!r} changed since its vectors were made "
                f"(sha256 {existing.weights_sha256[:12]}... recorded, "
                f"{(emb.info.weights_sha256 or '?')[:12]}... now); restore the file or use "
                "another store"
            )
    return emb


def _recorded_precision(name: str, recorded: str, asked: str | None) -> str:
    """The precision of an existing space: the one it recorded; another is refused."""
    if asked is not None and asked != recorded:
        raise BadInput(
            f"space {name!r} holds vectors computed in {recorded}; --precision {asked} would "
            f"mix two precisions in one space. Drop --precision, or embed into another store."
        )
    return recorded


def _recorded_weights(name: str, recorded: str, asked: str | None) -> str:
    """The weights of an existing CNN space: those it recorded; others are refused."""
    from ..embedders.resnet import weights_spec

    if asked is not None and weights_spec(asked) != recorded:
        raise BadInput(
            f"space {name!r} holds vectors made with weights {recorded}; --weights {asked} "
            "would mix two models in one space. Drop --weights to use the recorded ones, or "
            "use another store for the other weights."
        )
    return recorded


def embed_space(db: Database, emb: Embedder, progress: bool) -> SpaceEmbedStats:
    """Embed the usable images that have no vector in the embedder's space yet, those it
    failed before included. Each batch (its vectors, and its failures, recorded per space:
    the image stays usable in its other spaces) is committed on its own: a crash loses at
    most one."""
    info = emb.info
    stats = SpaceEmbedStats(
        space=info.name,
        device=getattr(emb, "device", "cpu"),
        weights=info.weights,
        weights_random=info.weights_random,
        precision=info.precision,
    )
    with db.session() as s:
        space_id = db.spaces.ensure(s, info).id
        s.commit()
    todo = db.images.to_embed(space_id)
    if not todo:
        return stats
    bar = progress_bar(len(todo), info.name, progress)
    t0 = time.perf_counter()
    with db.session() as s:
        for ids, vecs, failed in emb.embed_files(todo):
            db.vectors.add(s, space_id, ids, vecs)
            db.vectors.record_failures(s, space_id, failed)
            s.commit()
            stats.embedded += len(ids)
            stats.failed += len(failed)
            bar.update(len(ids) + len(failed))
    stats.seconds = time.perf_counter() - t0
    bar.close()
    return stats
