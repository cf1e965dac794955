"""``/api/v1/dead-letters``: messages ingest refused, with the reason, a page at a time."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from cloud_api.cursors import DeadLetterPosition, cursor_param, keyset_page
from cloud_api.deps import SessionDep, require
from cloud_api.params import Limit
from cloud_api.queries import dead_letters
from cloud_api.responses import AUTHENTICATED, problems
from cloud_api.schemas import DeadLetterOut, DeadLetterPage

router = APIRouter(
    prefix="/api/v1/dead-letters",
    tags=["dead letters"],
    dependencies=[Depends(require("read"))],
    responses=problems(*AUTHENTICATED, 422),
)

AfterDep = Annotated[DeadLetterPosition | None, Depends(cursor_param(DeadLetterPosition))]


@router.get("", response_model=DeadLetterPage, responses=problems(400))
def list_dead_letters(session: SessionDep, after: AfterDep, limit: Limit = 100) -> DeadLetterPage:
    """The newest dead letters first; follow ``next_cursor`` until it is null.

    Keyset pagination on the dead letter's id: a cursor holds the id of the last letter of
    its page, so letters stored while a client walks the pages never shift them.
    """
    rows = dead_letters.list_dead_letters(
        session, before_id=after.id if after is not None else None, limit=limit + 1
    )
    page, next_cursor = keyset_page(rows, limit, lambda row: DeadLetterPosition(id=row.id))
    return DeadLetterPage(
        items=[DeadLetterOut.model_validate(row) for row in page], next_cursor=next_cursor
    )
