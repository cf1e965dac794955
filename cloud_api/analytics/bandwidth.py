"""Bandwidth saved at the edge: raw bytes read against bytes sent, from pipeline summaries.

A summary counts when its window starts in ``[since, until)``, so adjacent reports never count
a window twice. Sums are done by the database, one row per pipeline or per bucket.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select, type_coerce
from sqlalchemy.orm import Session

from cloud_api.analytics.buckets import bucket_of
from cloud_api.schemas import (
    BandwidthPoint,
    BandwidthReport,
    BandwidthSeries,
    FleetBandwidth,
    PipelineBandwidth,
    SeriesBucket,
)
from cloud_api.tables import SummaryRow, UtcDateTime

_SUMMED = ("samples_in", "inferences", "gated", "events", "raw_bytes", "sent_bytes")


def bandwidth_report(
    session: Session,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    agent_id: str | None = None,
    pipeline: str | None = None,
) -> BandwidthReport:
    """Raw bytes read at the edge against bytes sent, per agent and pipeline, and in total."""
    conditions = _summary_filters(since=since, until=until, agent_id=agent_id, pipeline=pipeline)
    dialect = session.get_bind().dialect.name
    query = (
        select(
            SummaryRow.agent_id,
            SummaryRow.pipeline,
            func.count().label("summaries"),
            func.min(SummaryRow.window_start).label("first_window_start"),
            func.max(SummaryRow.window_end).label("last_window_end"),
            *(sum_column(getattr(SummaryRow, name), dialect).label(name) for name in _SUMMED),
        )
        .where(*conditions)
        .group_by(SummaryRow.agent_id, SummaryRow.pipeline)
        .order_by(SummaryRow.agent_id, SummaryRow.pipeline)
    )
    rows = [
        PipelineBandwidth(
            agent_id=row.agent_id,
            pipeline=row.pipeline,
            **_usage(
                row.summaries,
                row.first_window_start,
                row.last_window_end,
                # PostgreSQL sums bigint as numeric: back to int here, not in every caller.
                {name: int(getattr(row, name)) for name in _SUMMED},
            ),
        )
        for row in session.execute(query)
    ]
    starts = [r.first_window_start for r in rows if r.first_window_start is not None]
    ends = [r.last_window_end for r in rows if r.last_window_end is not None]
    total = FleetBandwidth(
        agents=len({r.agent_id for r in rows}),
        pipelines=len(rows),
        **_usage(
            sum(r.summaries for r in rows),
            min(starts, default=None),
            max(ends, default=None),
            {name: sum(getattr(r, name) for r in rows) for name in _SUMMED},
        ),
    )
    return BandwidthReport(since=since, until=until, pipelines=rows, total=total)


def sum_column(column: Any, dialect: str) -> ColumnElement[Any]:
    """A sum of a BIGINT column that cannot overflow: SQLite's ``sum`` raises past 2**63-1
    (``total`` adds in floating point); PostgreSQL already sums bigint as numeric."""
    return func.total(column) if dialect == "sqlite" else func.sum(column)


def _summary_filters(
    *,
    since: datetime | None,
    until: datetime | None,
    agent_id: str | None,
    pipeline: str | None,
) -> list[ColumnElement[bool]]:
    """Summaries whose window starts in ``[since, until)``, of one agent or pipeline if named."""
    conditions: list[ColumnElement[bool]] = []
    if since is not None:
        conditions.append(SummaryRow.window_start >= since)
    if until is not None:
        conditions.append(SummaryRow.window_start < until)
    if agent_id is not None:
        conditions.append(SummaryRow.agent_id == agent_id)
    if pipeline is not None:
        conditions.append(SummaryRow.pipeline == pipeline)
    return conditions


def bandwidth_series(
    session: Session,
    *,
    bucket: SeriesBucket,
    since: datetime,
    until: datetime,
    agent_id: str | None = None,
    pipeline: str | None = None,
) -> BandwidthSeries:
    """Raw against sent bytes per UTC hour or day of the summaries' window start.

    A summary belongs to the bucket its window starts in, so a window that crosses midnight
    counts once, on the day it began; buckets without summaries are absent.
    """
    dialect = session.get_bind().dialect.name
    start = bucket_of(bucket, dialect, SummaryRow.window_start)
    query = (
        select(
            type_coerce(start, UtcDateTime).label("bucket_start"),
            func.count().label("summaries"),
            sum_column(SummaryRow.raw_bytes, dialect).label("raw_bytes"),
            sum_column(SummaryRow.sent_bytes, dialect).label("sent_bytes"),
        )
        .where(*_summary_filters(since=since, until=until, agent_id=agent_id, pipeline=pipeline))
        .group_by(start)
        .order_by(start)
    )
    points = []
    for row in session.execute(query):
        raw, sent = int(row.raw_bytes), int(row.sent_bytes)  # numeric on PostgreSQL
        points.append(
            BandwidthPoint(
                ts=row.bucket_start,
                summaries=row.summaries,
                raw_bytes=raw,
                sent_bytes=sent,
                saved_bytes=raw - sent,
                ratio=sent / raw if raw else None,
            )
        )
    return BandwidthSeries(
        bucket=bucket,
        since=since,
        until=until,
        agent_id=agent_id,
        pipeline=pipeline,
        points=points,
    )


def _usage(
    summaries: int, first: datetime | None, last: datetime | None, sums: dict[str, int]
) -> dict[str, Any]:
    raw, sent = sums["raw_bytes"], sums["sent_bytes"]
    return {
        "summaries": summaries,
        "first_window_start": first,
        "last_window_end": last,
        **sums,
        "saved_bytes": raw - sent,
        "ratio": sent / raw if raw else None,
    }
