"""``/api/v1/events``: stored events with filters and keyset pagination."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from pydantic import AwareDatetime

from cloud_api import crud
from cloud_api.deps import ReadOrAgentDep, SessionDep
from cloud_api.schemas import EventOut, EventPage

router = APIRouter(prefix="/api/v1/events", tags=["events"])


def encode_cursor(ts: datetime, event_id: str) -> str:
    """An opaque cursor: the (ts, id) of the last event on a page."""
    raw = json.dumps([ts.isoformat(), event_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (ts, id) inside a cursor; ValueError if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts_text, event_id = json.loads(raw)
        ts = datetime.fromisoformat(ts_text)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ValueError(f"invalid cursor {cursor!r}: pass back a next_cursor unchanged") from exc
    if ts.tzinfo is None or not isinstance(event_id, str):
        raise ValueError(f"invalid cursor {cursor!r}: pass back a next_cursor unchanged")
    return ts, event_id


@router.get("", response_model=EventPage)
def list_events(
    session: SessionDep,
    principal: ReadOrAgentDep,
    agent_id: str | None = None,
    pipeline: str | None = None,
    label: str | None = None,
    kind: str | None = None,
    since: Annotated[AwareDatetime | None, Query(description="inclusive")] = None,
    until: Annotated[AwareDatetime | None, Query(description="exclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> EventPage:
    """Events newest first; follow ``next_cursor`` until it is null.

    An agent may list its own events only: it must pass its own ``agent_id``.
    """
    principal.check_agent(agent_id)
    try:
        after = decode_cursor(cursor) if cursor is not None else None
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None
    query = crud.events_page_query(
        agent_id=agent_id,
        pipeline=pipeline,
        label=label,
        kind=kind,
        since=since,
        until=until,
        after=after,
        limit=limit + 1,
    )
    rows = session.scalars(query).all()
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1].ts, page[-1].id) if len(rows) > limit else None
    return EventPage(items=[EventOut.model_validate(row) for row in page], next_cursor=next_cursor)
