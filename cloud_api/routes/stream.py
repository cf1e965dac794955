"""``/api/v1/events/stream``: new events as Server-Sent Events, for live dashboards.

Each stream polls the database on its own, by keyset on (received_at, id), with a short
session per poll. Nothing is shared in memory, so any API replica can serve (or resume) any
dashboard, and a slow client only falls behind itself: ingest never waits for it.

A stream outlives the request that opened it, so it authenticates its caller again every
``AIOT_STREAM_RECHECK_S`` seconds, from the same header and by the same rules: a key revoked
(on any replica) ends its streams within that time, with a last comment saying why.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, TypedDict

import anyio
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from cloud_api.callers import authenticate
from cloud_api.config import Settings
from cloud_api.deps import Requirement, SettingsDep
from cloud_api.queries.events import event_position, events_received_after
from cloud_api.responses import AUTHENTICATED, problems
from cloud_api.schemas import EventOut
from shared.fields import EventId
from shared.topics import AGENT_ID_PATTERN

NEEDS = Requirement("read")
"""Who may stream: checked when a stream opens and every AIOT_STREAM_RECHECK_S after."""
router = APIRouter(
    prefix="/api/v1/events", tags=["events"], dependencies=[Depends(NEEDS.dependency)]
)

HEARTBEAT = b": keep-alive\n\n"
# Filters match stored values or nothing; these bounds keep a NUL byte (which PostgreSQL
# refuses with an error) or a megabyte of text away from the query.
FilterText = Annotated[str | None, Query(max_length=128, pattern=r"^[^\x00-\x1f\x7f]*$")]
_EVENT_ID: TypeAdapter[str] = TypeAdapter(EventId)


class Filters(TypedDict):
    """The filters of ``GET /api/v1/events`` plus ``kind``; None matches anything."""

    agent_id: str | None
    pipeline: str | None
    label: str | None
    kind: str | None


class StreamSlots:
    """How many streams this process serves; a cap keeps threads and connections bounded."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._open = 0
        self._lock = threading.Lock()

    @property
    def open(self) -> int:
        """Streams being served now."""
        return self._open

    def acquire(self) -> bool:
        """Take a slot; False when all are taken."""
        with self._lock:
            if self._open >= self.capacity:
                return False
            self._open += 1
            return True

    def release(self) -> None:
        """Give a slot back."""
        with self._lock:
            self._open -= 1


class _SlotResponse(StreamingResponse):
    """A stream that gives its slot back however it ends, even before its first byte."""

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], None]) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            # Proxies (nginx) must pass each event on at once rather than buffer the stream.
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def format_event(event: EventOut) -> bytes:
    """One SSE message; ``data`` is the JSON of an item of ``GET /api/v1/events`` (one line)."""
    return f"id: {event.id}\nevent: event\ndata: {event.model_dump_json()}\n\n".encode()


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "events as they arrive"},
        400: {"description": "Last-Event-ID names no stored event"},
        503: {"description": "this replica serves as many streams as it may"},
        **problems(*AUTHENTICATED, 422),
    },
)
async def stream_events(
    request: Request,
    settings: SettingsDep,
    agent_id: Annotated[str | None, Query(pattern=AGENT_ID_PATTERN)] = None,
    pipeline: FilterText = None,
    label: FilterText = None,
    kind: FilterText = None,
    last_event_id: Annotated[str | None, Header(description="resume after this event")] = None,
) -> StreamingResponse:
    """New events in ingestion order; with ``Last-Event-ID``, those stored after that event.

    Without it the stream starts now. A ``: keep-alive`` comment is sent when idle so that
    proxies keep the connection and a gone client is noticed.
    """
    make_session: sessionmaker[Session] = request.app.state.sessionmaker
    if last_event_id is not None:
        if not _is_event_id(last_event_id):  # not worth a query, nor an echo
            raise HTTPException(
                400, "Last-Event-ID is not an event id: reconnect without it to stream from now"
            )
        start = await run_in_threadpool(_position, make_session, last_event_id)
        if start is None:
            raise HTTPException(
                status_code=400,
                detail=f"Last-Event-ID {last_event_id!r} is not a stored event: "
                "reconnect without it to stream from now",
            )
    else:
        start = (datetime.now(UTC), "")
    slots: StreamSlots = request.app.state.stream_slots
    if not slots.acquire():
        raise HTTPException(
            status_code=503,
            detail=f"this API replica already serves {slots.capacity} streams "
            "(AIOT_STREAM_MAX): retry later or on another replica",
            headers={"Retry-After": "5"},
        )
    filters = Filters(agent_id=agent_id, pipeline=pipeline, label=label, kind=kind)
    body = _events(request, settings, make_session, start, filters)
    return _SlotResponse(body, slots.release)


def _is_event_id(text: str) -> bool:
    try:
        _EVENT_ID.validate_python(text)
    except ValidationError:
        return False
    return True


def _position(make_session: sessionmaker[Session], event_id: str) -> tuple[datetime, str] | None:
    with make_session() as session:
        return event_position(session, event_id=event_id)


def _poll(
    make_session: sessionmaker[Session],
    after: tuple[datetime, str],
    until: datetime,
    filters: Filters,
    limit: int,
) -> list[EventOut]:
    # A session per poll: no connection or snapshot is held while the stream sleeps.
    with make_session() as session:
        rows = events_received_after(session, after=after, until=until, limit=limit, **filters)
        return [EventOut.model_validate(row) for row in rows]


def _refusal(
    settings: Settings, make_session: sessionmaker[Session], authorization: str | None
) -> str | None:
    """Why the caller may no longer stream (revoked, say), or None if it still may."""
    try:
        NEEDS.check(authenticate(settings, make_session, authorization))
    except HTTPException as refused:
        return str(refused.detail)
    return None


def _ended(reason: str) -> bytes:
    """The stream's last message: a comment, which clients show no one but may log."""
    return f": stream ended: {' '.join(reason.splitlines())}\n\n".encode()


async def _events(
    request: Request,
    settings: Settings,
    make_session: sessionmaker[Session],
    cursor: tuple[datetime, str],
    filters: Filters,
) -> AsyncIterator[bytes]:
    settle = timedelta(seconds=settings.stream_settle_s)
    last_sent = checked = time.monotonic()
    authorization = request.headers.get("authorization")
    while not await request.is_disconnected():
        if time.monotonic() - checked >= settings.stream_recheck_s:
            reason = await run_in_threadpool(_refusal, settings, make_session, authorization)
            if reason is not None:
                yield _ended(reason)
                return
            checked = time.monotonic()
        until = datetime.now(UTC) - settle
        page = await run_in_threadpool(
            _poll, make_session, cursor, until, filters, settings.stream_page
        )
        for event in page:
            yield format_event(event)
            cursor = (event.received_at, event.id)
        now = time.monotonic()
        if page:
            last_sent = now
        elif now - last_sent >= settings.stream_heartbeat_s:
            yield HEARTBEAT
            last_sent = now
        if len(page) < settings.stream_page:  # a full page means more is waiting: no sleep
            await anyio.sleep(settings.stream_poll_s)
