"""The SQLAlchemy engine of a store's database and the SQLite settings every connection gets."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def make_engine(db_path: Path) -> Engine:
    """An engine on the SQLite file; every connection it opens (ORM sessions and the raw
    DB-API connections of vecstore.db.database alike) gets the same pragmas."""
    engine = create_engine(f"sqlite:///{db_path}")

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record) -> None:
        cur = dbapi_conn.cursor()
        # WAL: readers keep working while one writer writes; NORMAL sync is durable at
        # checkpoints and never corrupts the file on a crash (only the last commit may be lost).
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: rows read in a session stay readable after it (detached records)
    return sessionmaker(engine, expire_on_commit=False)
