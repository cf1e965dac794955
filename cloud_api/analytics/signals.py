"""Summaries' signals per time bucket (the read path of ``signal_rollups``).

A machine's health trend over months: min, mean and max of a signal (``score``, ``rms_g``,
a channel's mean) per hour or day, one series per agent, pipeline and signal. It reads only
the rollups ingest keeps (``rollups.signal_rollup_rows`` and ``signal_day_rows``, the write
path), never the summaries: hours from ``signal_rollups``, whole days from
``signal_rollups_daily`` and the partial days at a range's edges from their hours, so a month
of the fleet by day is one row per series and day whatever the number of summaries. A
summary belongs to the hour its window starts in; a range takes every hour that overlaps
``[since, until)``. An answer holds at most ``MAX_POINTS`` points.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, func, select, text, type_coerce
from sqlalchemy.orm import Session
from sqlalchemy.types import NullType

from cloud_api.analytics import rollups
from cloud_api.analytics.buckets import bucket_of, ceil_hour, utc_reader
from cloud_api.rollup_tables import SIGNAL_DAY_ROLLUPS, SIGNAL_ROLLUPS
from cloud_api.schemas import SeriesBucket
from cloud_api.signal_schemas import SignalPoint, SignalReport, SignalSeries

SIGNAL_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
"""A signal name as the edge names it (the wire's ``SignalName``)."""

_SERIES = ("agent_id", "pipeline", "signal")
DAY_SCALE = 2.0**-5
"""Day sums are added up scaled by this (exact: a power of two) and scaled back here."""
_DAY_LESS_AN_HOUR = timedelta(hours=23)


MAX_POINTS = 4_000
"""The most points one answer carries: what the route serves within 50 ms at p99 (about 6 µs
a point from the database to the JSON at the median, twice that at p99), and more than a
chart can show. A month of the fleet by hour
(36 000) is refused with the ways to narrow it (as Prometheus refuses past 11 000 points a
series), rather than served in a third of a second."""


class TooManyPointsError(ValueError):
    """The answer would carry more than ``MAX_POINTS`` points."""


@dataclass(frozen=True)
class _Filters:
    agent_id: str | None
    pipeline: str | None
    signals: tuple[str, ...]

    def conditions(self, table: Any) -> list[ColumnElement[bool]]:
        found: list[ColumnElement[bool]] = []
        if self.agent_id is not None:
            found.append(table.agent_id == self.agent_id)
        if self.pipeline is not None:
            found.append(table.pipeline == self.pipeline)
        if self.signals:
            found.append(table.signal.in_(self.signals))
        return found


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
    ``[since, until)``; empty buckets are absent, never zero. ``signals`` empty: all.

    Raises TooManyPointsError past ``MAX_POINTS``, having read no more than one point over it.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        # A month of the fleet is thousands of index entries: starting parallel workers
        # costs more than reading them (as for the event aggregates).
        session.execute(text("SET LOCAL max_parallel_workers_per_gather = 0"))
    filters = _Filters(agent_id, pipeline, tuple(sorted(set(signals))))
    first, end = rollups.hour_of(since), ceil_hour(until)
    # Each bucket start read once: the fleet's series share them.
    connection = session.connection()
    to_utc: Callable[[Any], datetime] = functools.cache(utc_reader(session))
    rows: Sequence[Any]
    if bucket == "hour":
        rows = connection.execute(_hours(first, end, filters).limit(MAX_POINTS + 1)).all()
    else:  # starts read already: the daily and hourly tables' values are merged in order
        rows, to_utc = _days(connection, dialect, first, end, filters, to_utc), _read
    if len(rows) > MAX_POINTS:
        raise TooManyPointsError(
            f"the answer would hold more than {MAX_POINTS} points: narrow it with agent_id, "
            "pipeline or signal, shorten since/until, or use bucket=day"
        )
    series = _series(rows, to_utc)
    return SignalReport(bucket=bucket, since=since, until=until, series=series)


def _hours(first: datetime, end: datetime, filters: _Filters) -> Select[Any]:
    """The hourly rollup rows of ``[first, end)`` as (series, hour, count, sum, min, max)."""
    table = SIGNAL_ROLLUPS.c
    series = [table[name] for name in _SERIES]
    # The stored value as the driver gives it (``utc_reader`` converts each start once).
    hour = type_coerce(table.hour, NullType())
    return (
        select(*series, hour, table["count"], table["sum"], table["min"], table["max"])
        .where(table.hour >= first, table.hour < end, *filters.conditions(table))
        .order_by(*series, table.hour)
    )


def _days(
    connection: Connection,
    dialect: str,
    first: datetime,
    end: datetime,
    filters: _Filters,
    to_utc: Callable[[Any], datetime],
) -> list[tuple[Any, ...]]:
    """Day buckets of the hours ``[first, end)``: the whole days from ``signal_rollups_daily``,
    the partial first and last days added up from their hours; in series and day order, at
    most ``MAX_POINTS + 1`` of them, each start read as UTC."""
    whole_from, whole_to = rollups.day_of(first + _DAY_LESS_AN_HOUR), rollups.day_of(end)
    if whole_from >= whole_to:  # no whole day: all of it from the hours
        return _read_days(connection.execute(_hours_by_day(dialect, first, end, filters)), to_utc)
    table = SIGNAL_DAY_ROLLUPS.c
    series = [table[name] for name in _SERIES]
    day = type_coerce(table.day, NullType())
    whole = [
        (*row[:3], to_utc(row[3]), *row[4:])
        for row in connection.execute(
            select(*series, day, table["count"], table["sum"], table["min"], table["max"])
            .where(table.day >= whole_from, table.day < whole_to, *filters.conditions(table))
            .order_by(*series, table.day)
            .limit(MAX_POINTS + 1)
        )
    ]
    edges = [
        *_read_days(connection.execute(_hours_by_day(dialect, first, whole_from, filters)), to_utc),
        *_read_days(connection.execute(_hours_by_day(dialect, whole_to, end, filters)), to_utc),
    ]
    if not edges:
        return whole
    # Merged in the answer's order: series, then day.
    return sorted((*whole, *edges), key=lambda row: row[:4])[: MAX_POINTS + 1]


def _read(start: datetime) -> datetime:
    """A start ``_days`` read already."""
    return start


def _read_days(rows: Iterable[Any], to_utc: Callable[[Any], datetime]) -> list[tuple[Any, ...]]:
    """``_hours_by_day`` rows with their starts read as UTC and their sums scaled back (a sum
    past the float range saturates, as the stored ones do)."""
    return [
        (agent_id, pipeline, signal, to_utc(start), count,
         max(-rollups.FLOAT_MAX, min(rollups.FLOAT_MAX, float(total) / DAY_SCALE)), low, high)
        for agent_id, pipeline, signal, start, count, total, low, high in rows
    ]  # fmt: skip


def _hours_by_day(dialect: str, first: datetime, end: datetime, filters: _Filters) -> Select[Any]:
    """The hours ``[first, end)`` added up by day, in the database, where nothing overflows:
    counts in numeric on PostgreSQL and with SQLite's ``total`` (a float, where an integer
    ``sum`` would raise); a day is at most 24 hourly sums within the float range, added up
    scaled by ``DAY_SCALE`` (exact: a power of two), which ``_read_days`` takes back."""
    table = SIGNAL_ROLLUPS.c
    series = [table[name] for name in _SERIES]
    start = bucket_of("day", dialect, table.hour)
    count: ColumnElement[Any]
    count = func.sum(table["count"]) if dialect == "postgresql" else func.total(table["count"])
    total = func.sum(table["sum"] * DAY_SCALE)
    return (
        select(*series, start, count, total, func.min(table["min"]), func.max(table["max"]))
        .where(table.hour >= first, table.hour < end, *filters.conditions(table))
        .group_by(*series, start)
        .order_by(*series, start)
        .limit(MAX_POINTS + 1)
    )


def _series(rows: Sequence[Any], to_utc: Callable[[Any], datetime]) -> list[SignalSeries]:
    """The rows, in series order, as one ``SignalSeries`` each."""
    series: dict[tuple[str, str, str], list[SignalPoint]] = {}
    for agent_id, pipeline, signal, start, count, total, low, high in rows:
        ts, n = to_utc(start), int(count)
        point = SignalPoint(ts, low, _mean(total, n, low, high), high, n)
        series.setdefault((agent_id, pipeline, signal), []).append(point)
    return [
        SignalSeries(agent_id=agent_id, pipeline=pipeline, signal=signal, points=points)
        for (agent_id, pipeline, signal), points in series.items()
    ]


def _mean(total: Any, count: int, low: float, high: float) -> float | None:
    """``total / count`` within ``[low, high]`` (rounding may step outside); None when the
    total reached the float range (saturated, or a day's total past it)."""
    value = float(total)
    if not math.isfinite(value) or abs(value) >= rollups.FLOAT_MAX:
        return None
    mean: float = min(max(value / count, low), high)
    return mean
