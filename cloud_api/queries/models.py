"""Registered model versions (the registry stores the artifacts; these are the rows)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloud_api.tables import ModelVersionRow
from shared.errors import ConflictError


def list_model_versions(session: Session) -> Sequence[ModelVersionRow]:
    """Every registered model version, by name and then oldest first."""
    query = select(ModelVersionRow).order_by(ModelVersionRow.name, ModelVersionRow.id)
    return session.scalars(query).all()


def get_model_version(session: Session, *, name: str, version: str) -> ModelVersionRow | None:
    """One model version, or None if it was never registered."""
    query = select(ModelVersionRow).where(
        ModelVersionRow.name == name, ModelVersionRow.version == version
    )
    return session.scalars(query).one_or_none()


def add_model_version(session: Session, *, row: ModelVersionRow) -> ModelVersionRow:
    """Insert ``row`` (flushed, not committed); ConflictError if its (name, version) exists.

    The unique constraint decides, so two concurrent uploads of one version cannot both win;
    the caller commits once the artifact is stored.
    """
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise ConflictError(f"model {row.name} version {row.version} exists already") from None
    return row
