"""Aggregates of events per time bucket and group (the read path of the hourly rollups).

Hour and day buckets of the score (or a count) read the hourly rollups that ingest keeps
(``rollups.py``, the write path), and raw events only for the partial hours at either end of
the range; minute buckets and numeric attributes read raw events. Either way the database
buckets, extracts and aggregates, so a week comes back as one row per bucket and group.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    CompoundSelect,
    Float,
    Numeric,
    Select,
    Text,
    and_,
    case,
    cast,
    func,
    literal_column,
    or_,
    select,
    text,
    type_coerce,
    union_all,
)
from sqlalchemy.orm import InstrumentedAttribute, Session

from cloud_api.analytics import rollups
from cloud_api.analytics.buckets import bucket_of, ceil_hour, utc_reader
from cloud_api.queries.events import event_filters
from cloud_api.schemas import (
    AggregatePoint,
    AggregateReport,
    AggregateSeries,
    Bucket,
    GroupKey,
    Metric,
)
from cloud_api.tables import EventRow, UtcDateTime

ATTRIBUTE_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
"""Attribute names an aggregate accepts: they go inside a JSON path, so no quotes."""

Filters = dict[str, str | None]
"""``event_filters``' keyword arguments: agent_id, pipeline, label, kind (None: any)."""

_GROUP_COLUMNS: dict[GroupKey, InstrumentedAttribute[str]] = {
    "agent_id": EventRow.agent_id,
    "pipeline": EventRow.pipeline,
    "label": EventRow.label,
    "model_version": EventRow.model_version,
    "kind": EventRow.kind,
}


def aggregate_events(
    session: Session,
    *,
    metric: Metric,
    bucket: Bucket,
    since: datetime,
    until: datetime,
    attribute: str | None = None,
    group_by: Sequence[GroupKey] = (),
    group_by_attributes: Sequence[str] = (),
    agent_id: str | None = None,
    pipeline: str | None = None,
    label: str | None = None,
    kind: str | None = None,
    use_rollups: bool = True,
) -> AggregateReport:
    """``metric`` of the score (or of a numeric ``attribute``) per time bucket and group.

    With ``attribute``, only events where it is a number count; empty buckets are absent,
    never zero. ``group_by_attributes`` groups by event attributes' values too (a line, a
    direction, a zone: keys ``attributes.<name>``; events without one are left out); like
    ``attribute``, it reads raw events. ``use_rollups=False`` reads raw events for
    everything (same answer, slower).
    """
    for name in (attribute, *group_by_attributes):
        if name is not None and re.fullmatch(ATTRIBUTE_PATTERN, name) is None:
            raise ValueError(f"attribute {name!r} is not a plain name")
    filters: Filters = {"agent_id": agent_id, "pipeline": pipeline, "label": label, "kind": kind}
    if use_rollups and attribute is None and not group_by_attributes and bucket != "minute":
        series = _aggregate_rollups(
            session, metric=metric, bucket=bucket, since=since, until=until,
            group_by=group_by, filters=filters,
        )  # fmt: skip
    else:
        series = _aggregate_raw(
            session, metric=metric, bucket=bucket, since=since, until=until,
            attribute=attribute, group_by=group_by, filters=filters,
            group_by_attributes=group_by_attributes,
        )  # fmt: skip
    return AggregateReport(
        bucket=bucket,
        metric=metric,
        field=attribute or (None if metric == "count" else "score"),
        since=since,
        until=until,
        series=series,
    )


def _aggregate_raw(
    session: Session,
    *,
    metric: Metric,
    bucket: Bucket,
    since: datetime,
    until: datetime,
    attribute: str | None,
    group_by: Sequence[GroupKey],
    filters: Filters,
    group_by_attributes: Sequence[str] = (),
) -> list[AggregateSeries]:
    """``metric`` per bucket and group computed from the raw events of ``[since, until)``."""
    dialect = session.get_bind().dialect.name
    start = type_coerce(bucket_of(bucket, dialect, EventRow.ts), UtcDateTime).label("bucket_start")
    named: list[tuple[str, ColumnElement[str]]] = [
        (key, _GROUP_COLUMNS[key].expression) for key in dict.fromkeys(group_by)
    ]
    named += [
        (f"attributes.{name}", _text_attribute(name, dialect).label(f"attribute_{i}"))
        for i, name in enumerate(dict.fromkeys(group_by_attributes))
    ]
    groups = [column for _, column in named]
    conditions: list[ColumnElement[bool]] = [
        EventRow.ts >= since,
        EventRow.ts < until,
        *event_filters(**filters),
        *(column.is_not(None) for key, column in named if key.startswith("attributes.")),
    ]
    value: ColumnElement[float] = EventRow.score.expression
    if attribute is not None:
        value = _numeric_attribute(attribute, dialect)
        conditions.append(value.is_not(None))
    aggregate = func.count() if metric == "count" else _aggregate(metric, value, dialect)
    query = (
        select(*groups, start, aggregate.label("value"), func.count().label("events"))
        .where(*conditions)
        .group_by(*groups, start)
        .order_by(*groups, start)
    )
    series: dict[tuple[str, ...], list[AggregatePoint]] = {}
    for row in session.execute(query):
        points = series.setdefault(tuple(row[: len(groups)]), [])
        points.append(
            AggregatePoint(ts=row.bucket_start, value=_finite(row.value), count=row.events)
        )
    names = [key for key, _ in named]
    return [
        AggregateSeries(group=dict(zip(names, key, strict=True)), points=points)
        for key, points in series.items()
    ]


def _aggregate_rollups(
    session: Session,
    *,
    metric: Metric,
    bucket: Bucket,
    since: datetime,
    until: datetime,
    group_by: Sequence[GroupKey],
    filters: Filters,
) -> list[AggregateSeries]:
    """Hour or day buckets of the score from whole hours of rollups plus raw partial hours.

    Both parts become (groups, bucket, count, sum, min, max) rows in one ``UNION ALL``, and
    the outer ``GROUP BY`` merges them: counts and sums add, min and max combine, and the
    average is sum / count, as ``avg`` over the raw events computes it.
    """
    dialect = session.get_bind().dialect.name
    keys = list(dict.fromkeys(group_by))
    first_hour, last_hour = ceil_hour(since), rollups.hour_of(until)
    if first_hour >= last_hour:  # not one whole hour inside: all of it from raw events
        first_hour = last_hour = until
    parts: Select[*tuple[Any, ...]] | CompoundSelect[*tuple[Any, ...]] = _whole_hours(
        keys, bucket, dialect, (first_hour, last_hour), filters
    )
    edges = [(lo, hi) for lo, hi in ((since, first_hour), (last_hour, until)) if lo < hi]
    if edges:
        partial = _partial_hours(keys, bucket, dialect, edges, filters)
        if dialect == "postgresql":
            # Grouped on its own (a hash of ~100 groups): otherwise, to merge the parts in
            # order, PostgreSQL sorts the partial hours' ten thousand raw events first.
            fenced = partial.cte("partial_hours").prefix_with("MATERIALIZED")
            partial = select(*fenced.c)
        parts = union_all(parts, partial)
    merged = parts.subquery()
    group_columns = [merged.c[key] for key in keys]
    order = [*group_columns, merged.c.bucket_start]
    query: Select[*tuple[Any, ...]]
    if _one_row_per_bucket(keys, bucket, filters):
        # Each whole hour's rollup row is its group's bucket already, and a partial hour is a
        # bucket of its own: nothing to merge (a week by agent is 8 400 rows not to re-group).
        query = select(*merged.c).order_by(*order)
    else:
        query = (
            select(
                *group_columns,
                merged.c.bucket_start,
                # bigint, not numeric: a plain int per row instead of a Decimal to convert.
                cast(func.sum(merged.c.n), BigInteger).label("n"),
                func.sum(merged.c.total).label("total"),
                func.min(merged.c.low).label("low"),
                func.max(merged.c.high).label("high"),
            )
            .group_by(*group_columns, merged.c.bucket_start)
            .order_by(*order)
        )
    if dialect == "postgresql":
        # A week is tens of thousands of rollup rows: starting parallel workers for them costs
        # more than the scan (measured 55 ms against 13 ms on two busy cores).
        session.execute(text("SET LOCAL max_parallel_workers_per_gather = 0"))
    return _rolled_series(session, query, metric, keys)


def _one_row_per_bucket(keys: list[GroupKey], bucket: Bucket, filters: Filters) -> bool:
    """Whether the rollup rows of hour buckets are one per group and bucket already: their
    level is keyed by exactly the grouped columns (nothing else filtered on)."""
    wanted = [key for key, value in filters.items() if value is not None]
    return bucket == "hour" and set(rollups.level_for([*keys, *wanted]).series) == set(keys)


def _whole_hours(
    keys: list[GroupKey],
    bucket: Bucket,
    dialect: str,
    hours: tuple[datetime, datetime],
    filters: Filters,
) -> Select[*tuple[Any, ...]]:
    """The rollup rows of the whole hours in ``[first, last)``, from the smallest level.

    The fewest rows that answer: one an hour with nothing to group or filter by, one per hour
    and value with one dimension, one per hour and series otherwise.
    """
    wanted = {key: value for key, value in filters.items() if value is not None}
    rollup = rollups.level_for([*keys, *wanted]).table.c
    first, last = hours
    return select(
        *(rollup[key].label(key) for key in keys),
        _rollup_bucket(bucket, dialect, rollup.bucket).label("bucket_start"),
        rollup.events.label("n"),
        rollup.score_sum.label("total"),
        rollup.score_min.label("low"),
        rollup.score_max.label("high"),
    ).where(
        rollup.bucket >= first,
        rollup.bucket < last,
        *(rollup[key] == value for key, value in wanted.items()),
    )


def _partial_hours(
    keys: list[GroupKey],
    bucket: Bucket,
    dialect: str,
    edges: list[tuple[datetime, datetime]],
    filters: Filters,
) -> Select[*tuple[Any, ...]]:
    """The raw events of the partial hours at either end, already grouped per bucket.

    Aggregated here already: the partial hours of a week are ten thousand events or more,
    and the outer GROUP BY then merges a few rows per group instead of each one.
    """
    raw_groups = [_GROUP_COLUMNS[key] for key in keys]
    raw_start = bucket_of(bucket, dialect, EventRow.ts)
    return (
        select(
            *(column.label(column.key) for column in raw_groups),
            raw_start.label("bucket_start"),
            func.count().label("n"),
            func.sum(EventRow.score).label("total"),
            func.min(EventRow.score).label("low"),
            func.max(EventRow.score).label("high"),
        )
        .where(
            or_(*(and_(EventRow.ts >= lo, EventRow.ts < hi) for lo, hi in edges)),
            *event_filters(**filters),
        )
        .group_by(*raw_groups, raw_start)
    )


def _rolled_series(
    session: Session, query: Select[*tuple[Any, ...]], metric: Metric, keys: list[GroupKey]
) -> list[AggregateSeries]:
    """The merged (groups, bucket, count, sum, min, max) rows as one series per group.

    A week by agent is thousands of rows (50 agents x 168 hours): per row, only unpacking and
    one plain dict. Rows come from Core (no ORM row loading), each bucket start is converted
    once (fifty rows share it), the metric is picked by a function chosen up front, and all
    the points are validated in one call (not one model constructor per point).
    """
    value_of = _ROLLED_METRIC[metric]
    to_utc = utc_reader(session)
    starts: dict[Any, datetime] = {}
    series: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    # The driver's own tuples: SQLAlchemy's Row objects cost ~1 us a row, and these columns
    # need no type processing (``to_utc`` reads the bucket start as ``UtcDateTime`` would).
    result = session.connection().execute(query)
    rows = result.cursor.fetchall()
    result.close()
    for *group, start, count, total, low, high in rows:
        ts = starts.get(start)
        if ts is None:
            ts = starts[start] = to_utc(start)
        point = {"ts": ts, "value": value_of(count, total, low, high), "count": count}
        series.setdefault(tuple(group), []).append(point)
    return _SERIES_LIST.validate_python(
        [{"group": dict(zip(keys, key, strict=True)), "points": points}
         for key, points in series.items()]
    )  # fmt: skip


_SERIES_LIST = TypeAdapter(list[AggregateSeries])


_ROLLED_METRIC: dict[Metric, Callable[[int, float, float, float], float]] = {
    "count": lambda count, _total, _low, _high: count,
    "avg": lambda count, total, _low, _high: total / count,
    "min": lambda _count, _total, low, _high: low,
    "max": lambda _count, _total, _low, high: high,
}
"""A metric from a bucket's merged (count, sum, min, max)."""


def _rollup_bucket(bucket: Bucket, dialect: str, hour: Any) -> ColumnElement[Any]:
    """A rollup row's bucket start: on PostgreSQL an hour is its own (no date_trunc per row)."""
    if bucket == "hour" and dialect == "postgresql":
        # The same type and value date_trunc gives the raw events' side of the UNION.
        return func.timezone(literal_column("'UTC'"), hour)
    return bucket_of(bucket, dialect, hour)


def _aggregate(metric: Metric, value: ColumnElement[float], dialect: str) -> ColumnElement[Any]:
    """``metric`` over raw values without overflowing: the contract lets an attribute be any
    finite float or 64-bit integer, and PostgreSQL's float8 ``avg`` of a few such values
    raises; it averages as numeric here."""
    if metric == "avg":
        # SQLite's avg adds in floating point (never raises): a mean whose running sum passes
        # the float range reads as null there; PostgreSQL's numeric mean is exact.
        return func.avg(value) if dialect == "sqlite" else func.avg(cast(value, Numeric))
    return cast(getattr(func, metric)(value), Float)


def _finite(value: object) -> float | None:
    """A database number as a float, or None past the float range (a numeric sum can be)."""
    if value is None:
        return None
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else None


def _text_attribute(name: str, dialect: str) -> ColumnElement[str]:
    """The attribute's value as text (a line's name, a direction), NULL where absent."""
    if dialect == "sqlite":
        return cast(func.json_extract(EventRow.attributes, f'$."{name}"'), Text)
    value: ColumnElement[str] = EventRow.attributes[name].as_string()
    return value


def _numeric_attribute(name: str, dialect: str) -> ColumnElement[float]:
    """The attribute as a float where it is a JSON number, else NULL (strings, booleans)."""
    if dialect == "sqlite":
        path = f'$."{name}"'
        is_number = func.json_type(EventRow.attributes, path).in_(("integer", "real"))
        return case((is_number, func.json_extract(EventRow.attributes, path)), else_=None)
    element = EventRow.attributes[name]
    return case((func.jsonb_typeof(element) == "number", element.as_float()), else_=None)
