"""A store's database: the engine, ORM sessions, raw DB-API connections for bulk rows and the
hot path, the schema revision, and one repository per table family.

This package is the only code in vecstore that speaks SQL. Everything reaches SQLite
through one SQLAlchemy engine, two ways: ORM sessions for ordinary rows, and the engine's
own DB-API connections (``raw()``, ``read()``) where millions of rows or a millisecond count.

>>> db = Database(Path("store/vecstore.db"))      # doctest: +SKIP
>>> db.labels.all()                                 # doctest: +SKIP
{7: 'cancer'}
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from .engine import make_engine, session_factory
from .images import ImageRepo
from .labels import LabelRepo
from .migrate import current_revision, head_revision, run_migrations
from .outputs import OutputRepo
from .runs import RunRepo
from .spaces import SpaceRepo
from .vectors import VectorRepo


class Database:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.engine = make_engine(path)
        self._sessions = session_factory(self.engine)
        self._watch: Any = None  # a pooled DB-API connection held open (see data_version)
        self.images = ImageRepo(self)
        self.vectors = VectorRepo(self)
        self.spaces = SpaceRepo(self)
        self.labels = LabelRepo(self)
        self.runs = RunRepo(self)
        self.outputs = OutputRepo(self)

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

    # ---- schema -----------------------------------------------------------------------------
    def revision(self) -> str | None:
        return current_revision(self.engine)

    def at_head(self) -> bool:
        return self.revision() == head_revision()

    def migrate(self) -> str:
        """Upgrade to the head revision (refusing a schema from a newer vecstore)."""
        return run_migrations(self.engine)

    def integrity(self) -> tuple[str, list[tuple]]:
        """(SQLite's integrity_check answer, the rows that break a foreign key)."""
        with self.session() as s:
            answer = s.execute(text("PRAGMA integrity_check")).scalar()
            broken = [tuple(r) for r in s.execute(text("PRAGMA foreign_key_check")).all()]
        return str(answer), broken

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        self.engine.dispose()
