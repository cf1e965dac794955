"""Summaries' signals per time bucket (the read path of ``signal_rollups``).

A machine's health trend over months: min, mean and max of a signal (``score``, ``rms_g``,
a channel's mean) per hour or day, one series per agent, pipeline and signal. It reads only
the hourly rollups ingest keeps (``rollups.signal_rollup_rows``, the write path), never the
summaries, so a month of the fleet is a few tens of thousands of rows whatever the number of
summaries. A summary belongs to the hour its window starts in; a range takes every hour that
overlaps ``[since, until)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select, text, type_coerce
from sqlalchemy.orm import Session
from sqlalchemy.types import NullType

from cloud_api.analytics import rollups
from cloud_api.analytics.buckets import bucket_of, utc_reader
from cloud_api.schemas import SeriesBucket
from cloud_api.signal_schemas import SignalPoint, SignalReport, SignalSeries
from cloud_api.tables import SIGNAL_ROLLUPS

SIGNAL_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
"""A signal name as the edge names it (the wire's ``SignalName``)."""

_SERIES = ("agent_id", "pipeline", "signal")
DAY_SCALE = 2.0**-5
"""Day sums are added up scaled by this (exact: a power of two) and scaled back here."""


def signal_series(
    session: Session,
    *,
    bucket: SeriesBucket,
    since: datetime,
    until: datetime,
    agent_id: str | None = None,
    pipeline: str | None = None,
    signals: Sequence[str] = (),
) -> SignalReport:
    """Min, mean, max and count of each signal per ``bucket`` over the hours overlapping
    ``[since, until)``; empty buckets are absent, never zero. ``signals`` empty: all."""
    dialect = session.get_bind().dialect.name
    query = _query(bucket, dialect, since, until, agent_id, pipeline, signals)
    if dialect == "postgresql":
        # A month of the fleet is tens of thousands of index entries: starting parallel
        # workers costs more than reading them (as for the event aggregates).
        session.execute(text("SET LOCAL max_parallel_workers_per_gather = 0"))
    return SignalReport(
        bucket=bucket,
        since=since,
        until=until,
        series=_series(session.connection().execute(query).all(), bucket, utc_reader(session)),
    )


def _query(
    bucket: SeriesBucket,
    dialect: str,
    since: datetime,
    until: datetime,
    agent_id: str | None,
    pipeline: str | None,
    signals: Sequence[str],
) -> Select[Any]:
    """(agent_id, pipeline, signal, bucket start, count, sum, min, max) per bucket, in order.

    Hour buckets are the rollup rows themselves; day buckets add them up in the database,
    where nothing may overflow: counts in numeric on PostgreSQL and with SQLite's ``total``
    (a float, where an integer ``sum`` would raise), sums scaled by ``DAY_SCALE``.
    """
    table = SIGNAL_ROLLUPS.c
    conditions: list[ColumnElement[bool]] = [
        table.hour >= rollups.hour_of(since),
        table.hour < until,
    ]
    if agent_id is not None:
        conditions.append(table.agent_id == agent_id)
    if pipeline is not None:
        conditions.append(table.pipeline == pipeline)
    if signals:
        conditions.append(table.signal.in_(sorted(set(signals))))
    series = [table[name] for name in _SERIES]
    if bucket == "hour":
        # The stored value as the driver gives it (``utc_reader`` converts each start once).
        hour = type_coerce(table.hour, NullType())
        return select(*series, hour, table["count"], table["sum"], table["min"],
                      table["max"]).where(*conditions).order_by(*series, table.hour)  # fmt: skip
    start = bucket_of(bucket, dialect, table.hour)
    count: ColumnElement[Any]
    total: ColumnElement[Any]
    # A day is at most 24 hourly sums, each within the float range: scaled by 1/32 (exact,
    # a power of two) they add up without overflowing, which PostgreSQL would refuse.
    total = func.sum(table["sum"] * DAY_SCALE)
    count = func.sum(table["count"]) if dialect == "postgresql" else func.total(table["count"])
    return (
        select(*series, start, count, total, func.min(table["min"]), func.max(table["max"]))
        .where(*conditions)
        .group_by(*series, start)
        .order_by(*series, start)
    )


def _series(
    rows: Sequence[Any], bucket: SeriesBucket, to_utc: Callable[[Any], datetime]
) -> list[SignalSeries]:
    """The rows, in series order, as one ``SignalSeries`` each; each bucket start converted
    once (the fleet's series share them)."""
    starts: dict[Any, datetime] = {}
    series: dict[tuple[str, str, str], list[SignalPoint]] = {}
    scale = 1.0 if bucket == "hour" else 1 / DAY_SCALE
    for agent_id, pipeline, signal, start, count, total, low, high in rows:
        ts = starts.get(start)
        if ts is None:
            ts = starts[start] = to_utc(start)
        n = int(count)
        # Built without validation: every value is of its field's type already, and a month
        # of the fleet by hour is 36 000 points (validation would be a third of the time).
        point = SignalPoint.model_construct(
            ts=ts, min=low, mean=_mean(total, scale, n, low, high), max=high, count=n
        )
        series.setdefault((agent_id, pipeline, signal), []).append(point)
    return [
        SignalSeries(agent_id=agent_id, pipeline=pipeline, signal=signal, points=points)
        for (agent_id, pipeline, signal), points in series.items()
    ]


def _mean(total: Any, scale: float, count: int, low: float, high: float) -> float | None:
    """``total x scale / count`` within ``[low, high]`` (rounding may step outside); None when
    the total reached the float range (saturated, or a day's total past it)."""
    value = float(total) * scale
    if not math.isfinite(value) or abs(value) >= rollups.FLOAT_MAX:
        return None
    mean: float = min(max(value / count, low), high)
    return mean
