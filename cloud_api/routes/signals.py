"""``/api/v1/signals``: summaries' signals (score, RMS, a channel's mean) per hour or day."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from fastapi.responses import JSONResponse

from cloud_api.analytics.signals import SIGNAL_PATTERN, TooManyPointsError, signal_series
from cloud_api.deps import SessionDep, require
from cloud_api.params import AgentIdQuery, NameQuery, SinceQuery, UntilQuery
from cloud_api.responses import AUTHENTICATED, problems
from cloud_api.routes.aggregates import bucketed_range
from cloud_api.schemas import SeriesBucket
from cloud_api.signal_schemas import SignalReport
from shared.messages import MAX_SUMMARY_SIGNALS

router = APIRouter(
    prefix="/api/v1/signals",
    tags=["signals"],
    dependencies=[Depends(require("read"))],
    responses=problems(*AUTHENTICATED, 422),
)


@router.get("", response_model=SignalReport, response_class=JSONResponse)
def signals(
    session: SessionDep,
    bucket: SeriesBucket = "hour",
    signal: Annotated[
        list[Annotated[str, Query(pattern=SIGNAL_PATTERN)]] | None,
        Query(
            max_length=MAX_SUMMARY_SIGNALS,
            description="a signal as the edge names it (score, rms_g, <channel>_mean); "
            "repeat for several; all of them when absent",
        ),
    ] = None,
    agent_id: AgentIdQuery = None,
    pipeline: NameQuery = None,
    since: SinceQuery = None,
    until: UntilQuery = None,
) -> Response:
    """Min, mean, max and count of each signal per bucket: one series per agent, pipeline
    and signal; the last 24 h by default.

    A summary counts in the hour its window starts in, and the range takes every hour that
    overlaps ``[since, until)``. Empty buckets are left out rather than zero-filled. It reads
    the hourly rollups ingest keeps, never the summaries, so a month of the fleet answers
    fast: narrow it with ``agent_id``, ``pipeline`` and ``signal``. An answer of more than
    MAX_POINTS points is refused (422) with the ways to narrow it.
    """
    since, until = bucketed_range(since, until, bucket)
    try:
        report = signal_series(
            session,
            bucket=bucket,
            since=since,
            until=until,
            agent_id=agent_id,
            pipeline=pipeline,
            signals=signal or (),
        )
    except TooManyPointsError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    # Serialized once, by pydantic: up to MAX_POINTS points, which FastAPI would validate
    # again and serialize through dicts first.
    return Response(report.model_dump_json(), media_type="application/json")
