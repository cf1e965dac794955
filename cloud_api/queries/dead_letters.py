"""Dead letters: messages ingest refused, newest first."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud_api.tables import DeadLetterRow


def list_dead_letters(
    session: Session, *, before_id: int | None = None, limit: int
) -> Sequence[DeadLetterRow]:
    """The newest (highest id) dead letters first; ``before_id`` is the last id of the
    previous page."""
    query = select(DeadLetterRow)
    if before_id is not None:
        query = query.where(DeadLetterRow.id < before_id)
    return session.scalars(query.order_by(DeadLetterRow.id.desc()).limit(limit)).all()
