"""The database layer: the only code in vecstore that speaks SQL (see database.py)."""

from .database import Database
from .engine import make_engine
from .migrate import alembic_config, current_revision, head_revision, run_migrations

__all__ = [
    "Database",
    "alembic_config",
    "current_revision",
    "head_revision",
    "make_engine",
    "run_migrations",
]
