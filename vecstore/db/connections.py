"""How the database layer reaches SQLite: one SQLAlchemy engine, ORM sessions for ordinary
rows, and the engine's own DB-API connections where millions of rows or a millisecond count
(``raw()`` for bulk reads and writes, ``read()`` and ``data_version()`` on one held
connection for the hot path of a query)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from .engine import make_engine, session_factory


class Connections:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.engine = make_engine(path)
        self._sessions = session_factory(self.engine)
        self._watch: Any = None  # a pooled DB-API connection held open (see data_version)

    def session(self) -> Session:
        return self._sessions()

    @contextmanager
    def raw(self) -> Iterator[sqlite3.Connection]:
        """A DB-API connection from the engine's pool, for bulk reads and writes."""
        conn = self.engine.raw_connection()
        try:
            yield conn.driver_connection
        finally:
            conn.close()

    def _watch_conn(self) -> sqlite3.Connection:
        if self._watch is None:
            self._watch = self.engine.raw_connection()
        return self._watch.driver_connection

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """A read on the held connection, no ORM: the hot path of a single query."""
        return self._watch_conn().execute(sql, params).fetchall()

    def data_version(self) -> int:
        """SQLite's PRAGMA data_version on the held connection: it changes whenever another
        connection commits, so what was read at one version can be trusted until it moves."""
        return self._watch_conn().execute("PRAGMA data_version").fetchone()[0]

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        self.engine.dispose()
