"""``POST /api/v1/events/{id}/feedback``: a person confirms an event, calls it a false alarm or
relabels it; the verdict is kept with who (the API key's name) and when, and labels the
event's samples (those stored now, and those that arrive later)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path

from cloud_api.deps import OperateDep, SessionDep
from cloud_api.queries.samples import add_feedback, get_event
from cloud_api.responses import AUTHENTICATED, problems
from cloud_api.sample_schemas import FALSE_ALARM_LABEL, FeedbackIn, FeedbackOut
from cloud_api.tables import EventFeedbackRow
from shared.fields import EventId
from shared.messages import utcnow

router = APIRouter(
    prefix="/api/v1/events", tags=["events"], responses=problems(*AUTHENTICATED, 422)
)

EventIdPath = Annotated[EventId, Path(description="the event's id")]


@router.post(
    "/{event_id}/feedback",
    status_code=201,
    response_model=FeedbackOut,
    responses=problems(404),
)
def give_feedback(
    event_id: EventIdPath, body: FeedbackIn, session: SessionDep, principal: OperateDep
) -> FeedbackOut:
    """Record a verdict on a stored event and label its samples; 404 for an unknown event."""
    event = get_event(session, event_id)
    if event is None:
        raise HTTPException(404, f"no event {event_id}")
    if body.verdict == "confirmed":
        label = event.label
    elif body.verdict == "false_alarm":
        label = body.label or FALSE_ALARM_LABEL
    else:
        assert body.label is not None  # FeedbackIn requires it
        label = body.label
    row = EventFeedbackRow(
        event_id=event_id,
        verdict=body.verdict,
        label=label,
        author=principal.name,
        created_at=utcnow(),
    )
    labelled = add_feedback(session, row, event.agent_id)
    session.commit()
    return FeedbackOut(
        event_id=event_id,
        verdict=body.verdict,
        label=label,
        author=row.author,
        created_at=row.created_at,
        samples_labelled=labelled,
    )
