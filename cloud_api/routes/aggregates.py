"""``/api/v1/aggregates``: events counted or averaged per time bucket, for dashboards."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Response

from cloud_api.analytics.aggregates import ATTRIBUTE_PATTERN, aggregate_events
from cloud_api.analytics.buckets import MAX_BUCKETS, bucket_count
from cloud_api.deps import SessionDep, require
from cloud_api.params import AgentIdQuery, LabelQuery, NameQuery, SinceQuery, UntilQuery
from cloud_api.responses import AUTHENTICATED, json_response, problems
from cloud_api.schemas import AggregateReport, Bucket, GroupKey, Metric
from shared.messages import utcnow

router = APIRouter(
    prefix="/api/v1/aggregates",
    tags=["aggregates"],
    dependencies=[Depends(require("read"))],
    responses=problems(*AUTHENTICATED, 422),
)

DEFAULT_WINDOW = timedelta(hours=24)


def bucketed_range(
    since: datetime | None, until: datetime | None, bucket: Bucket
) -> tuple[datetime, datetime]:
    """``[since, until)`` of a bucketed query: the last 24 h by default, refused (422, with
    the reason) when empty or when it spans more than ``MAX_BUCKETS`` buckets."""
    until = until if until is not None else utcnow()
    since = since if since is not None else until - DEFAULT_WINDOW
    if until <= since:
        raise HTTPException(status_code=422, detail="until must be after since")
    buckets = bucket_count(since=since, until=until, bucket=bucket)
    if buckets > MAX_BUCKETS:
        raise HTTPException(
            status_code=422,
            detail=f"the range spans {buckets} {bucket} buckets, more than {MAX_BUCKETS}: "
            "narrow since/until or use a coarser bucket",
        )
    return since, until


@router.get("", response_model=AggregateReport)
def aggregates(
    session: SessionDep,
    metric: Metric = "count",
    bucket: Bucket = "hour",
    attribute: Annotated[
        str | None,
        Query(
            pattern=ATTRIBUTE_PATTERN,
            description="a numeric event attribute (e.g. rms_g) instead of the score",
        ),
    ] = None,
    group_by: Annotated[
        list[GroupKey] | None, Query(max_length=5, description="repeat to nest")
    ] = None,
    group_by_attribute: Annotated[
        list[Annotated[str, Query(pattern=ATTRIBUTE_PATTERN)]] | None,
        Query(
            max_length=3,
            description="group by an event attribute's value too (line, direction, zone)",
        ),
    ] = None,
    agent_id: AgentIdQuery = None,
    pipeline: NameQuery = None,
    label: LabelQuery = None,
    kind: NameQuery = None,
    since: SinceQuery = None,
    until: UntilQuery = None,
) -> Response:
    """One series per group of bucket start, value and count; the last 24 h by default.

    Empty buckets are left out rather than zero-filled, so a sparse week stays small.
    Hour and day buckets of the score (or of a count) come from hourly rollups kept at
    ingest, so a week or a month answers fast whatever the number of events; minute buckets,
    attributes and grouping by attribute (``group_by_attribute=line`` with
    ``group_by_attribute=direction`` counts crossings per line and direction) are computed
    from the raw events, so keep their ranges short.
    """
    since, until = bucketed_range(since, until, bucket)
    report = aggregate_events(
        session,
        metric=metric,
        bucket=bucket,
        since=since,
        until=until,
        attribute=attribute,
        group_by=group_by or (),
        group_by_attributes=group_by_attribute or (),
        agent_id=agent_id,
        pipeline=pipeline,
        label=label,
        kind=kind,
    )
    return json_response(report)
