"""The SQLAlchemy engine of a store's database, the SQLite settings every connection gets, and
what a SQLite failure means to the user (a damaged file, a read-only store, a full disk)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import URL, Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from ..errors import StoreDamaged, StoreReadOnly, StoreUnreadable, VecstoreError, WriteFailed

# SQLite's primary result codes (https://sqlite.org/rescode.html)
SQLITE_READONLY, SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_FULL, SQLITE_CANTOPEN = 8, 10, 11, 13, 14
SQLITE_NOTADB = 26


def make_engine(db_path: Path) -> Engine:
    """An engine on the SQLite file; every connection it opens (ORM sessions and the raw
    DB-API connections of vecstore.db.database alike) gets the same pragmas. In a folder this
    user cannot write, the file is opened read-only and immutable: SQLite could not create the
    WAL index beside it, and no one can change it there."""
    read_only = db_path.parent.is_dir() and not os.access(db_path.parent, os.W_OK)
    engine = create_engine(_url(db_path, read_only))

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record) -> None:
        set_pragmas(dbapi_conn, read_only=read_only)

    @event.listens_for(engine, "handle_error")
    def _meaning(ctx) -> None:
        err = sqlite_error(ctx.original_exception, db_path)
        if err is not None:
            raise err

    return engine


def set_pragmas(dbapi_conn: Any, *, read_only: bool) -> None:
    """The settings every connection to a store gets, pooled or not."""
    cur = dbapi_conn.cursor()
    if not read_only:
        # WAL: readers keep working while one writer writes; NORMAL sync is durable at
        # checkpoints and never corrupts the file on a crash (only the last commit may be lost).
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def unpooled_connection(engine: Engine) -> sqlite3.Connection:
    """A DB-API connection to the engine's file, outside its pool (which holds 15 at most),
    with the same URL and settings; usable from any thread; the caller closes it."""
    cargs, cparams = engine.dialect.create_connect_args(engine.url)
    conn = engine.dialect.loaded_dbapi.connect(*cargs, **{**cparams, "check_same_thread": False})
    set_pragmas(conn, read_only=engine.url.query.get("mode") == "ro")
    return conn


def _url(db_path: Path, read_only: bool) -> URL:
    """The file's URL, built whole (a path may hold '?', '#' or '%')."""
    if not read_only:
        return URL.create("sqlite", database=str(db_path))
    query = {"mode": "ro", "uri": "true"}
    wal = Path(f"{db_path}-wal")
    if not (wal.exists() and wal.stat().st_size):  # commits left in a WAL file need it read
        query["immutable"] = "1"
    return URL.create("sqlite", database="file:" + quote(str(db_path)), query=query)


def sqlite_error(exc: BaseException | None, db_path: Path) -> VecstoreError | None:
    """The VecstoreError a SQLite exception stands for, with how to fix it; None for the
    errors a caller handles itself (constraints, a busy database...)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return None
    primary, detail, path = code & 0xFF, str(exc), str(db_path)
    if primary in (SQLITE_CORRUPT, SQLITE_NOTADB):
        return StoreDamaged(path, detail)
    if primary == SQLITE_READONLY:
        return StoreReadOnly(str(db_path.parent), detail)
    if primary == SQLITE_FULL:
        return WriteFailed(
            f"could not write the database {path} ({detail}): free some disk space and run "
            "the command again (the last transaction was rolled back; nothing is half-written)"
        )
    if primary in (SQLITE_CANTOPEN, SQLITE_IOERR):
        return StoreUnreadable(path, detail)
    return None


def session_factory(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: rows read in a session stay readable after it (detached records)
    return sessionmaker(engine, expire_on_commit=False)
