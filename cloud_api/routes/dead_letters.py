"""``/api/v1/dead-letters``: messages ingest refused, with the reason."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from cloud_api import crud
from cloud_api.deps import SessionDep, require
from cloud_api.schemas import DeadLetterOut

router = APIRouter(
    prefix="/api/v1/dead-letters", tags=["dead letters"], dependencies=[Depends(require("read"))]
)


@router.get("", response_model=list[DeadLetterOut])
def list_dead_letters(
    session: SessionDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[DeadLetterOut]:
    """The newest dead letters first."""
    return [
        DeadLetterOut.model_validate(row) for row in crud.list_dead_letters(session, limit=limit)
    ]
