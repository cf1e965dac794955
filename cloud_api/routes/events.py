"""``/api/v1/events``: stored events with filters and keyset pagination."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from cloud_api.cursors import EventPosition, cursor_param, keyset_page
from cloud_api.deps import ReadOrAgentDep, SessionDep
from cloud_api.params import AgentIdQuery, LabelQuery, Limit, NameQuery, SinceQuery, UntilQuery
from cloud_api.queries.events import events_page_query
from cloud_api.responses import AUTHENTICATED, problems
from cloud_api.schemas import EventOut, EventPage

router = APIRouter(
    prefix="/api/v1/events", tags=["events"], responses=problems(*AUTHENTICATED, 422)
)

AfterDep = Annotated[EventPosition | None, Depends(cursor_param(EventPosition))]


@router.get("", response_model=EventPage, responses=problems(400))
def list_events(
    session: SessionDep,
    principal: ReadOrAgentDep,
    after: AfterDep,
    agent_id: AgentIdQuery = None,
    pipeline: NameQuery = None,
    label: LabelQuery = None,
    kind: NameQuery = None,
    since: SinceQuery = None,
    until: UntilQuery = None,
    limit: Limit = 100,
) -> EventPage:
    """Events newest first (by ``ts``, then id); follow ``next_cursor`` until it is null.

    Keyset pagination: a cursor holds the (ts, id) of the last event of its page, so pages
    neither skip nor repeat events while new ones arrive. Keep the filters the same while
    walking. An agent may list its own events only: it must pass its own ``agent_id``.
    """
    principal.check_agent(agent_id)
    query = events_page_query(
        agent_id=agent_id,
        pipeline=pipeline,
        label=label,
        kind=kind,
        since=since,
        until=until,
        after=(after.ts, after.id) if after is not None else None,
        limit=limit + 1,
    )
    rows = session.scalars(query).all()
    page, next_cursor = keyset_page(rows, limit, lambda row: EventPosition(ts=row.ts, id=row.id))
    return EventPage(items=[EventOut.model_validate(row) for row in page], next_cursor=next_cursor)
