"""Schema migrations: Alembic configured in code (no alembic.ini, so it works from a wheel),
the schema revision of a database, and the upgrade to head applied when a store is opened."""

from __future__ import annotations

import os

from sqlalchemy import Engine, text

from ..errors import StoreVersionError


def alembic_config(engine: Engine | None = None):
    """Alembic Config built in code (no alembic.ini): works from a wheel as well as a checkout."""
    from alembic.config import Config

    from vecstore import migrations

    cfg = Config()
    cfg.set_main_option("script_location", os.path.dirname(migrations.__file__))
    if engine is not None:
        # a '%' in the store's path would read as ConfigParser interpolation
        cfg.set_main_option("sqlalchemy.url", str(engine.url).replace("%", "%%"))
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The schema revision in alembic_version; None for a database without tables yet. A
    version table that holds several rows, or none beside vecstore's tables, was changed by
    hand: refused, since migrating would run on a schema it does not describe."""
    with engine.connect() as conn:
        tables = {
            r[0] for r in conn.execute(text("SELECT name FROM sqlite_master WHERE type='table'"))
        }
        rows = []
        if "alembic_version" in tables:
            rows = [r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))]
    if len(rows) > 1:
        raise StoreVersionError(
            f"the store's schema version table alembic_version holds {len(rows)} rows "
            f"({', '.join(map(repr, rows))}) where it holds one: it was changed by hand. Keep "
            f"only the right row (this vecstore's schema head is {head_revision()!r}) or "
            "restore a backup of vecstore.db"
        )
    if not rows and tables - {"alembic_version", "sqlite_sequence"}:
        raise StoreVersionError(
            "the store's schema version table alembic_version is empty (or gone) but the "
            "database holds tables: it was changed by hand. Restore a backup of vecstore.db, "
            "or put back the revision the store is at (this vecstore's schema head is "
            f"{head_revision()!r})"
        )
    return rows[0] if rows else None


def run_migrations(engine: Engine, *, upgrade: bool = True) -> str:
    """Bring the database to the head revision; refuse a schema this vecstore does not know.

    Returns the schema revision the store is at afterwards.
    """
    from alembic.script import ScriptDirectory

    cfg = alembic_config(engine)
    script = ScriptDirectory.from_config(cfg)
    head = script.get_current_head()
    current = current_revision(engine)
    if current is not None:
        try:
            script.get_revision(current)
        except Exception as exc:  # alembic raises several kinds for an unknown revision
            raise StoreVersionError(
                f"this store has schema revision {current!r}, which this vecstore "
                f"(schema head {head!r}) does not know: it was written by a newer vecstore. "
                "Upgrade vecstore (pip install -U vecstore) to open it. (If no newer vecstore "
                "wrote it, its alembic_version table was changed by hand: restore a backup.)"
            ) from exc
    if current == head or not upgrade:
        return current or ""
    _upgrade(engine, cfg)
    return head or ""


def _upgrade(engine: Engine, cfg) -> None:
    """Upgrade to head with foreign keys off: SQLite changes a table by copying it, and
    dropping the old copy with foreign keys on would delete every row that points at it
    (ON DELETE CASCADE). The keys are checked once the schema is at head."""
    from alembic import command

    with engine.connect() as conn:
        pragma = conn.connection.driver_connection.execute  # outside any transaction
        pragma("PRAGMA foreign_keys=OFF")  # (a no-op inside one)
        try:
            with conn.begin():
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise StoreVersionError(
                        f"the schema upgrade would leave {len(broken)} rows pointing at rows "
                        f"that do not exist (first: {tuple(broken[0])}); nothing was changed"
                    )
        finally:
            pragma("PRAGMA foreign_keys=ON")
