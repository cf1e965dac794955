"""Stored events: the dashboard's filters, keyset pages newest first, ingestion order."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, Select, select, tuple_
from sqlalchemy.orm import Session

from cloud_api.tables import EventRow


def event_filters(
    *,
    agent_id: str | None = None,
    pipeline: str | None = None,
    label: str | None = None,
    kind: str | None = None,
) -> list[ColumnElement[bool]]:
    """The filters a dashboard gives every events query (list, stream, aggregates)."""
    wanted = (
        (EventRow.agent_id, agent_id),
        (EventRow.pipeline, pipeline),
        (EventRow.label, label),
        (EventRow.kind, kind),
    )
    return [column == value for column, value in wanted if value is not None]


def events_page_query(
    *,
    agent_id: str | None = None,
    pipeline: str | None = None,
    label: str | None = None,
    kind: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after: tuple[datetime, str] | None = None,
    limit: int,
) -> Select[EventRow]:
    """Events newest first on (ts, id); ``after`` is the last (ts, id) of the previous page.

    ``since`` is inclusive and ``until`` exclusive, so adjacent windows never overlap. A query,
    not rows: the bench EXPLAINs it to check that every filter has an index.
    """
    query = select(EventRow).where(
        *event_filters(agent_id=agent_id, pipeline=pipeline, label=label, kind=kind)
    )
    if since is not None:
        query = query.where(EventRow.ts >= since)
    if until is not None:
        query = query.where(EventRow.ts < until)
    if after is not None:
        query = query.where(tuple_(EventRow.ts, EventRow.id) < tuple_(*after))
    return query.order_by(EventRow.ts.desc(), EventRow.id.desc()).limit(limit)


def events_received_after(
    session: Session,
    *,
    after: tuple[datetime, str],
    until: datetime,
    agent_id: str | None = None,
    pipeline: str | None = None,
    label: str | None = None,
    kind: str | None = None,
    limit: int,
) -> Sequence[EventRow]:
    """Events in ingestion order, (received_at, id) after ``after``, received before ``until``.

    The order is the cloud's, not the edge's: an outbox drained after an outage carries old
    ``ts`` but is new to a live dashboard. ``until`` holds back rows that a slower ingest
    transaction may still be committing beside them (see ``stream_settle_s``).
    """
    query = select(EventRow).where(
        tuple_(EventRow.received_at, EventRow.id) > tuple_(*after),
        EventRow.received_at <= until,
        *event_filters(agent_id=agent_id, pipeline=pipeline, label=label, kind=kind),
    )
    query = query.order_by(EventRow.received_at, EventRow.id).limit(limit)
    return session.scalars(query).all()


def event_position(session: Session, *, event_id: str) -> tuple[datetime, str] | None:
    """Where an event sits in ingestion order, or None if it is not stored (any more)."""
    received_at = session.scalar(select(EventRow.received_at).where(EventRow.id == event_id))
    return None if received_at is None else (received_at, event_id)
