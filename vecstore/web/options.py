"""How `vecstore serve` runs (every default declared here once), light enough for the
command line to read without loading the service."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ..params import FileLimits

MiB = 2**20
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


@dataclass(frozen=True)
class ServeOptions:
    """How `vecstore serve` runs; every default is declared here once."""

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None  # required on every request when set (and to bind non-loopback)
    reviewer: str | None = None  # the name recorded when a request names none
    max_upload: int = 20 * MiB  # a query image uploaded: 413 beyond
    limits: FileLimits = field(default_factory=lambda: FileLimits(max_bytes=256 * MiB))
    neighbours: int = 8  # default k of a neighbour query
    search_threads: int = 1  # FAISS threads per query: requests run side by side instead
    max_k: int = 100


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
