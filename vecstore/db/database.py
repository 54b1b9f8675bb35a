"""A store's database: its connections, its schema revision, and one repository per table
family. This package is the only code in vecstore that speaks SQL.

>>> db = Database(Path("store/vecstore.db"))      # doctest: +SKIP
>>> db.labels.all()                                 # doctest: +SKIP
{7: 'cancer'}
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from .connections import Connections
from .images import ImageRepo
from .labels import LabelRepo
from .migrate import current_revision, head_revision, run_migrations
from .outputs import OutputRepo
from .runs import RunRepo
from .spaces import SpaceRepo
from .vectors import VectorRepo


class Database(Connections):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.images = ImageRepo(self)
        self.vectors = VectorRepo(self)
        self.spaces = SpaceRepo(self)
        self.labels = LabelRepo(self)
        self.runs = RunRepo(self)
        self.outputs = OutputRepo(self)

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
