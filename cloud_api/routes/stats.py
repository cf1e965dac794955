"""``/api/v1/stats``: what the edge saved, from the summaries pipelines send."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException

from cloud_api.analytics import bandwidth as analytics
from cloud_api.deps import SessionDep, require
from cloud_api.params import AgentIdQuery, NameQuery, WindowSinceQuery, WindowUntilQuery
from cloud_api.responses import AUTHENTICATED, problems
from cloud_api.routes.aggregates import bucketed_range
from cloud_api.schemas import BandwidthReport, BandwidthSeries, SeriesBucket

router = APIRouter(
    prefix="/api/v1/stats",
    tags=["stats"],
    dependencies=[Depends(require("read"))],
    responses=problems(*AUTHENTICATED, 422),
)


@router.get("/bandwidth", response_model=BandwidthReport)
def bandwidth(
    session: SessionDep,
    since: WindowSinceQuery = None,
    until: WindowUntilQuery = None,
    agent_id: AgentIdQuery = None,
    pipeline: NameQuery = None,
) -> BandwidthReport:
    """Raw bytes read at the edge against bytes sent to the cloud, per agent and pipeline,
    with the fleet total; all time unless ``since``/``until`` narrow it."""
    if since is not None and until is not None and until <= since:
        raise HTTPException(status_code=422, detail="until must be after since")
    return analytics.bandwidth_report(
        session, since=since, until=until, agent_id=agent_id, pipeline=pipeline
    )


@router.get("/bandwidth/series", response_model=BandwidthSeries)
def bandwidth_series(
    session: SessionDep,
    bucket: SeriesBucket = "hour",
    since: WindowSinceQuery = None,
    until: WindowUntilQuery = None,
    agent_id: AgentIdQuery = None,
    pipeline: NameQuery = None,
) -> BandwidthSeries:
    """Bandwidth saved over time: raw against sent bytes per UTC hour or day of the summaries'
    window start; the last 24 h by default, the same range rules as ``/api/v1/aggregates``."""
    since, until = bucketed_range(since, until, bucket)
    return analytics.bandwidth_series(
        session, bucket=bucket, since=since, until=until, agent_id=agent_id, pipeline=pipeline
    )
