"""Expert labels: at most one per image, with where it came from. Pseudo-labels never land
here (they are predictions of a propagation run, vecstore.db.outputs)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import delete, func, select

from .models import Label

if TYPE_CHECKING:  # pragma: no cover
    from .connections import Connections


class LabelRepo:
    def __init__(self, db: Connections) -> None:
        self.db = db

    def all(self) -> dict[int, str]:
        """image id -> expert label."""
        with self.db.session() as s:
            return dict(s.execute(select(Label.image_id, Label.label)).all())

    def get(self, image_id: int) -> Label | None:
        with self.db.session() as s:
            return s.scalar(select(Label).where(Label.image_id == image_id))

    def counts(self) -> list[tuple[str, str, int]]:
        """(label, source, count), sorted by label then source."""
        q = (
            select(Label.label, Label.source, func.count())
            .group_by(Label.label, Label.source)
            .order_by(Label.label, Label.source)
        )
        with self.db.session() as s:
            return [(lab, src, n) for lab, src, n in s.execute(q)]

    def set(self, image_id: int, label: str, source: str) -> None:
        """Give an image this label (replacing the one it has)."""
        with self.db.session() as s:
            row = s.scalar(select(Label).where(Label.image_id == image_id))
            if row is None:
                s.add(Label(image_id=image_id, label=label, source=source))
            else:
                row.label, row.source = label, source
            s.commit()

    def remove(self, image_id: int) -> None:
        with self.db.session() as s:
            s.execute(delete(Label).where(Label.image_id == image_id))
            s.commit()

    def write(self, labels: dict[int, str], source: str) -> None:
        """Set many labels in one transaction (new ones added, others replaced)."""
        with self.db.session() as s:
            for image_id, label in labels.items():
                s.execute(delete(Label).where(Label.image_id == image_id))
                s.add(Label(image_id=image_id, label=label, source=source))
            s.commit()
