"""How the database layer reaches SQLite: one SQLAlchemy engine, ORM sessions for ordinary
rows, and the engine's own DB-API connections where millions of rows or a millisecond count
(``raw()`` for bulk reads and writes; for the hot path of a query, ``read()`` on a
connection held per thread, so that a service's threads read side by side, and
``data_version()`` on one held connection). A SQLite failure that means a damaged, read-only or
full store comes out of every path as the VecstoreError that says so (engine.sqlite_error);
``integrity_problems()`` asks SQLite to check the file itself."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from .engine import make_engine, session_factory, sqlite_error, unpooled_connection

SHOWN_INTEGRITY_LINES = 5  # lines of SQLite's integrity_check answer kept in a report
SQLITE_MAX_PARAMS = 30000  # bound parameters per statement, under SQLite's limit


def in_chunks(items: Iterable[Any], size: int = SQLITE_MAX_PARAMS) -> Iterator[list[Any]]:
    """``items`` in lists short enough to bind as the parameters of one statement."""
    items = list(items)
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Connections:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.engine = make_engine(path)
        self._sessions = session_factory(self.engine)
        self._watch: Any = None  # a pooled DB-API connection held open (see data_version)
        self._readers: dict[int, sqlite3.Connection] = {}  # thread id -> its read() connection
        self._readers_lock = threading.Lock()

    def session(self) -> Session:
        return self._sessions()

    @contextmanager
    def _meaning(self) -> Iterator[None]:
        """Raw DB-API paths bypass SQLAlchemy's error events: say what a failure means here."""
        try:
            yield
        except sqlite3.Error as exc:
            err = sqlite_error(exc, self.path)
            if err is None:
                raise
            raise err from exc

    @contextmanager
    def raw(self) -> Iterator[sqlite3.Connection]:
        """A DB-API connection from the engine's pool, for bulk reads and writes."""
        with self._meaning():
            conn = self.engine.raw_connection()
            try:
                yield conn.driver_connection
            finally:
                conn.close()

    def _watch_conn(self) -> sqlite3.Connection:
        if self._watch is None:
            self._watch = self.engine.raw_connection()
        return self._watch.driver_connection

    def _reader(self) -> sqlite3.Connection:
        """This thread's read connection, opened on its first read. Outside the engine's pool
        (a service runs more threads than it holds) and never shared: one sqlite3 connection
        runs one statement at a time, so threads sharing one queued behind each other. Keyed
        by thread ident: a new thread given an ended thread's ident takes over its idle reader,
        which keeps their number to the threads alive at once."""
        thread = threading.get_ident()
        conn = self._readers.get(thread)
        if conn is None:
            conn = unpooled_connection(self.engine)
            with self._readers_lock:
                self._readers[thread] = conn
        return conn

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """A read, no ORM, on this thread's own connection: the hot path of a single query."""
        with self._meaning():
            return self._reader().execute(sql, params).fetchall()

    def data_version(self) -> int:
        """SQLite's PRAGMA data_version on the held connection: it changes whenever another
        connection commits, so what was read at one version can be trusted until it moves."""
        with self._meaning():
            return self._watch_conn().execute("PRAGMA data_version").fetchone()[0]

    def integrity_problems(self, *, quick: bool = False) -> list[str]:
        """What SQLite's integrity_check (``quick``: quick_check, which skips comparing the
        indexes with their tables) finds wrong in the file: [] when it is sound; a file SQLite
        cannot even read gives its error."""
        pragma = "quick_check" if quick else "integrity_check"
        try:
            conn = self.engine.raw_connection()
            try:
                cur = conn.driver_connection.execute(f"PRAGMA {pragma}({SHOWN_INTEGRITY_LINES})")
                lines = [str(r[0]) for r in cur]
            finally:
                conn.close()
        except sqlite3.Error as exc:  # "file is not a database", "... malformed"
            return [str(exc)]
        return [] if lines == ["ok"] else lines

    def foreign_key_problems(self) -> list[tuple]:
        """The rows that point at a row that does not exist (PRAGMA foreign_key_check)."""
        with self.raw() as raw:
            return [tuple(r) for r in raw.execute("PRAGMA foreign_key_check")]

    def close(self) -> None:
        with self._readers_lock:
            readers, self._readers = self._readers, {}
        alive = {t.ident for t in threading.enumerate()} - {threading.get_ident()}
        for thread, conn in readers.items():
            if thread not in alive:  # another thread's may be mid-read: freed when it is done
                conn.close()
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        self.engine.dispose()
