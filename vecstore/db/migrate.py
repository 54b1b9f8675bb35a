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
        cfg.set_main_option("sqlalchemy.url", str(engine.url))
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        has_table = conn.execute(
            text("SELECT 1 FROM sqlite_master WHERE type='table' AND name='alembic_version'")
        ).first()
        if not has_table:
            return None
        row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
        return row[0] if row else None


def run_migrations(engine: Engine, *, upgrade: bool = True) -> str:
    """Bring the database to the head revision; refuse a schema this vecstore does not know.

    Returns the schema revision the store is at afterwards.
    """
    from alembic import command
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
                "Upgrade vecstore (pip install -U vecstore) to open it."
            ) from exc
    if current == head or not upgrade:
        return current or ""
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return head or ""
