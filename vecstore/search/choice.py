"""Which FAISS index a space gets: by its size, its dimension and a memory budget, or the
factory the user named; and when a built index no longer fits its space."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ..db.models import Space
    from .index import SpaceIndex

EXACT_MAX_BYTES = 32 * 2**20  # a Flat scan of 32 MiB answers a query in a few ms


def default_memory_budget() -> int:
    """Half of this machine's RAM."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError):
        return 8 * 2**30


@dataclass
class IndexPlan:
    factory: str  # faiss.index_factory string (inner product metric)
    bytes: int  # estimated memory of the index
    exact: bool
    why: str


def choose_index(n: int, dim: int, memory_budget: int | None = None) -> IndexPlan:
    """The index a space of n vectors of dim dimensions gets, after the FAISS guidelines
    (github.com/facebookresearch/faiss/wiki/Guidelines-to-choose-an-index) and autofaiss:
    exact search while a scan of all vectors takes a few milliseconds, then IVF. The lists
    hold 8-bit scalar-quantised vectors (SQ8) while they fit the memory budget: a single query
    is bound by memory bandwidth, and SQ8 answers in half the time of full vectors at the same
    recall; past the budget, 4-bit (SQ4), then product quantisation (PQ, dim/8 bytes a vector).

    ~2 sqrt(n) lists, under the guidelines' 4-16 sqrt(n): on 1M x 512 here IVF2048,SQ8 trains
    and fills in half the time of IVF4096,SQ8 and answers a query faster at the same recall@10
    once nprobe is tuned (bench/BENCHMARKS.md, "IVF lists")."""
    ids = n * 16  # ids + the inverted-list overhead
    flat = n * dim * 4
    if flat <= EXACT_MAX_BYTES:
        return IndexPlan(
            "Flat",
            flat + n * 8,
            True,
            f"{n:,} vectors x {dim} ({flat / 2**20:.0f} MiB): exact search is fast enough",
        )
    budget = memory_budget if memory_budget is not None else default_memory_budget()
    nlist = int(2 ** round(np.log2(2 * np.sqrt(n))))
    nlist = max(16, min(nlist, n // 39))  # FAISS wants >= 39 training points per list
    quant = nlist * dim * 4
    for factory, per in ((f"IVF{nlist},SQ8", dim), (f"IVF{nlist},SQ4", dim // 2)):
        if n * per + ids + quant <= budget:
            return IndexPlan(
                factory,
                n * per + ids + quant,
                False,
                f"{n:,} vectors x {dim}: IVF with {nlist} lists, {per} bytes a vector "
                f"within the {budget / 2**30:.1f} GiB budget",
            )
    m = max(8, dim // 8)
    while dim % m:
        m -= 1
    return IndexPlan(
        f"IVF{nlist},PQ{m}",
        n * m + ids + quant,
        False,
        f"{n:,} vectors x {dim}: 4-bit vectors ({n * dim / 2 / 2**30:.1f} GiB) exceed the "
        f"{budget / 2**30:.1f} GiB budget: product quantisation, {m} bytes a vector "
        "(recall may stay under the target)",
    )


def plan_for(space: Space, n: int, dim: int) -> tuple[str, str]:
    """(factory, why) of the index a space of n vectors gets, ``dim`` the dimension the
    index holds (the space's, or its transform's output): the one asked for with
    ``--index``, else the automatic choice."""
    if space.index_factory:
        return space.index_factory, "chosen with --index"
    plan = choose_index(n, dim, space.memory_budget)
    return plan.factory, plan.why


def wants_rebuild(space: Space, idx: SpaceIndex, n: int) -> bool:
    """The built index no longer fits the space: another factory was asked for, or the
    automatic choice changed family (exact <-> IVF), or its IVF lists were trained for a
    size 4x away from the present one."""
    if space.index_factory:
        return space.index_factory != idx.factory
    plan = choose_index(n, idx.dim, space.memory_budget)
    if plan.factory == idx.factory or (idx.exact and plan.exact):
        return False
    built_n = (space.index_stats or {}).get("n") or 0
    return idx.exact != plan.exact or not (built_n / 4 <= n <= built_n * 4)
