"""Queries behind the REST API; keyword-only, one function per question."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    CompoundSelect,
    Float,
    Numeric,
    Select,
    and_,
    case,
    cast,
    func,
    literal_column,
    or_,
    select,
    text,
    tuple_,
    type_coerce,
    union_all,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import InstrumentedAttribute, Session

from cloud_api.analytics import rollups
from cloud_api.schemas import (
    AgentOut,
    AggregatePoint,
    AggregateReport,
    AggregateSeries,
    BandwidthPoint,
    BandwidthReport,
    BandwidthSeries,
    Bucket,
    FleetBandwidth,
    GroupKey,
    Metric,
    PipelineBandwidth,
    PipelineOut,
    SeriesBucket,
)
from cloud_api.tables import (
    AgentRow,
    DeadLetterRow,
    DeploymentAgentRow,
    DeploymentRow,
    DesiredStateRow,
    EventRow,
    ModelVersionRow,
    SummaryRow,
    UtcDateTime,
)
from shared.errors import ConflictError

HEARTBEAT_MISSED = "heartbeat missed"
LAST_WILL = "connection lost (last will)"


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


def list_agents(session: Session) -> Sequence[AgentRow]:
    """Every agent that ever reported a status, by id."""
    return session.scalars(select(AgentRow).order_by(AgentRow.agent_id)).all()


def get_agent(session: Session, *, agent_id: str) -> AgentRow | None:
    """One agent, or None if it never reported."""
    return session.get(AgentRow, agent_id)


def describe_agent(row: AgentRow, *, now: datetime, grace: float) -> AgentOut:
    """What an operator wants to know: is it online, and if not, why.

    An agent that said ``online`` but has been silent for ``grace`` heartbeats is offline
    even though no Last Will arrived (a broker restart or a partition can lose it).
    """
    status: dict[str, Any] = row.last_status
    state, reason = row.state, row.reason
    if state == "offline":
        reason = reason or LAST_WILL
    elif row.heartbeat_s > 0 and (
        row.last_seen is None or now - row.last_seen > timedelta(seconds=grace * row.heartbeat_s)
    ):
        state, reason = "offline", HEARTBEAT_MISSED
    return AgentOut(
        agent_id=row.agent_id,
        state="online" if state == "online" else "offline",
        reason=reason,
        last_seen=row.last_seen,
        heartbeat_s=row.heartbeat_s,
        status_ts=status.get("ts"),
        agent_version=status.get("agent_version", ""),
        uptime_s=status.get("uptime_s", 0.0),
        outbox_depth=status.get("outbox_depth", 0),
        outbox_oldest_age_s=status.get("outbox_oldest_age_s", 0.0),
        pipelines=[PipelineOut.model_validate(p) for p in status.get("pipelines", [])],
    )


_SUMMED = ("samples_in", "inferences", "gated", "events", "raw_bytes", "sent_bytes")


def bandwidth_report(
    session: Session,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    agent_id: str | None = None,
    pipeline: str | None = None,
) -> BandwidthReport:
    """Raw bytes read at the edge against bytes sent, per agent and pipeline, and in total.

    A summary counts when its window starts in ``[since, until)``, so adjacent reports
    never count a window twice. Sums are done by the database, one row per pipeline.
    """
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
    start = _bucket_of(bucket, dialect, SummaryRow.window_start)
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


BUCKET_WIDTH: dict[Bucket, timedelta] = {
    "minute": timedelta(minutes=1),
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
}
MAX_BUCKETS = 100_000
ATTRIBUTE_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
"""Attribute names an aggregate accepts: they go inside a JSON path, so no quotes."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LAST_HOUR = datetime(9999, 12, 31, 23, tzinfo=UTC)
# SQLite stores ts as fixed-width naive UTC text ("2026-11-22 10:04:05.123456"), so
# strftime cuts it to the bucket start without any time zone arithmetic.
_SQLITE_BUCKET_FORMAT: dict[Bucket, str] = {
    "minute": "%Y-%m-%d %H:%M:00",
    "hour": "%Y-%m-%d %H:00:00",
    "day": "%Y-%m-%d 00:00:00",
}
_GROUP_COLUMNS: dict[GroupKey, InstrumentedAttribute[str]] = {
    "agent_id": EventRow.agent_id,
    "pipeline": EventRow.pipeline,
    "label": EventRow.label,
    "model_version": EventRow.model_version,
    "kind": EventRow.kind,
}


def bucket_count(*, since: datetime, until: datetime, bucket: Bucket) -> int:
    """How many buckets ``[since, until)`` touches (buckets are aligned to UTC midnight)."""
    width = BUCKET_WIDTH[bucket]
    first = (since - _EPOCH) // width
    last = (until - timedelta(microseconds=1) - _EPOCH) // width
    return last - first + 1


def aggregate_events(
    session: Session,
    *,
    metric: Metric,
    bucket: Bucket,
    since: datetime,
    until: datetime,
    attribute: str | None = None,
    group_by: Sequence[GroupKey] = (),
    agent_id: str | None = None,
    pipeline: str | None = None,
    label: str | None = None,
    kind: str | None = None,
    use_rollups: bool = True,
) -> AggregateReport:
    """``metric`` of the score (or of a numeric ``attribute``) per time bucket and group.

    Bucketing, JSON extraction and aggregation all run in the database, so a week of
    events comes back as at most one row per bucket and group. With ``attribute``, only
    events where it is a number count; empty buckets are absent, never zero. Hour and day
    buckets of the score (or a count) read the hourly rollups, and raw events only for the
    partial hours at either end of the range; minute buckets and attributes read raw events.
    ``use_rollups=False`` reads raw events for everything (same answer, slower).
    """
    if attribute is not None and re.fullmatch(ATTRIBUTE_PATTERN, attribute) is None:
        raise ValueError(f"attribute {attribute!r} is not a plain name")
    if use_rollups and attribute is None and bucket != "minute":
        from_rollups = _aggregate_rollups(
            session,
            metric=metric,
            bucket=bucket,
            since=since,
            until=until,
            group_by=group_by,
            filters={"agent_id": agent_id, "pipeline": pipeline, "label": label, "kind": kind},
        )
        return _report(
            metric=metric,
            bucket=bucket,
            since=since,
            until=until,
            attribute=None,
            series=from_rollups,
        )
    dialect = session.get_bind().dialect.name
    start = type_coerce(_bucket_start(bucket, dialect), UtcDateTime).label("bucket_start")
    groups = [_GROUP_COLUMNS[key] for key in dict.fromkeys(group_by)]
    conditions: list[ColumnElement[bool]] = [
        EventRow.ts >= since,
        EventRow.ts < until,
        *event_filters(agent_id=agent_id, pipeline=pipeline, label=label, kind=kind),
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
    names = [column.key for column in groups]
    named = [
        AggregateSeries(group=dict(zip(names, key, strict=True)), points=points)
        for key, points in series.items()
    ]
    return _report(
        metric=metric, bucket=bucket, since=since, until=until, attribute=attribute, series=named
    )


def _report(
    *,
    metric: Metric,
    bucket: Bucket,
    since: datetime,
    until: datetime,
    attribute: str | None,
    series: list[AggregateSeries],
) -> AggregateReport:
    return AggregateReport(
        bucket=bucket,
        metric=metric,
        field=attribute or (None if metric == "count" else "score"),
        since=since,
        until=until,
        series=series,
    )


def _aggregate_rollups(
    session: Session,
    *,
    metric: Metric,
    bucket: Bucket,
    since: datetime,
    until: datetime,
    group_by: Sequence[GroupKey],
    filters: dict[str, str | None],
) -> list[AggregateSeries]:
    """Hour or day buckets of the score from whole hours of rollups plus raw partial hours.

    Both parts become (groups, bucket, count, sum, min, max) rows in one ``UNION ALL``, and
    the outer ``GROUP BY`` merges them: counts and sums add, min and max combine, and the
    average is sum / count, as ``avg`` over the raw events computes it.
    """
    dialect = session.get_bind().dialect.name
    keys = list(dict.fromkeys(group_by))
    first_hour, last_hour = _ceil_hour(since), _floor_hour(until)
    if first_hour >= last_hour:  # not one whole hour inside: all of it from raw events
        first_hour = last_hour = until
    wanted = {key: value for key, value in filters.items() if value is not None}
    # The fewest rows that answer: one an hour with nothing to group or filter by, one per
    # hour and value with one dimension, one per hour and series otherwise.
    rollup = rollups.level_for([*keys, *wanted]).table.c
    whole = select(
        *(rollup[key].label(key) for key in keys),
        _rollup_bucket(bucket, dialect, rollup.bucket).label("bucket_start"),
        rollup.events.label("n"),
        rollup.score_sum.label("total"),
        rollup.score_min.label("low"),
        rollup.score_max.label("high"),
    ).where(
        rollup.bucket >= first_hour,
        rollup.bucket < last_hour,
        *(rollup[key] == value for key, value in wanted.items()),
    )
    edges = [(lo, hi) for lo, hi in ((since, first_hour), (last_hour, until)) if lo < hi]
    parts: Select[Any] | CompoundSelect[Any] = whole
    if edges:
        # Aggregated here already: the partial hours of a week are ten thousand events or
        # more, and the outer GROUP BY then merges a few rows per group instead of each one.
        raw_groups = [_GROUP_COLUMNS[key] for key in keys]
        raw_start = _bucket_of(bucket, dialect, EventRow.ts)
        partial = (
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
        parts = union_all(whole, partial)
    merged = parts.subquery()
    group_columns = [merged.c[key] for key in keys]
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
        .order_by(*group_columns, merged.c.bucket_start)
    )
    if dialect == "postgresql":
        # A week is tens of thousands of rollup rows: starting parallel workers for them costs
        # more than the scan (measured 55 ms against 13 ms on two busy cores).
        session.execute(text("SET LOCAL max_parallel_workers_per_gather = 0"))
    # A week by agent is thousands of rows (50 agents x 168 hours): per row, only unpacking
    # and one point. Rows come from Core (no ORM row loading), each bucket start is converted
    # once (fifty rows share it), and the metric is picked by a function chosen up front.
    value_of = _ROLLED_METRIC[metric]
    to_utc = _utc_reader(session)
    starts: dict[Any, datetime] = {}
    series: dict[tuple[str, ...], list[AggregatePoint]] = {}
    for *group, start, count, total, low, high in session.connection().execute(query).all():
        ts = starts.get(start)
        if ts is None:
            ts = starts[start] = to_utc(start)
        point = AggregatePoint(ts=ts, value=value_of(count, total, low, high), count=count)
        series.setdefault(tuple(group), []).append(point)
    return [
        AggregateSeries(group=dict(zip(keys, key, strict=True)), points=points)
        for key, points in series.items()
    ]


def _utc_reader(session: Session) -> Callable[[Any], datetime]:
    """How ``UtcDateTime`` reads a value of this database (naive UTC text on SQLite)."""
    dialect = session.get_bind().dialect
    process = UtcDateTime().dialect_impl(dialect).result_processor(dialect, None)

    def read(value: Any) -> datetime:
        result = process(value) if process is not None else value
        if not isinstance(result, datetime):
            raise TypeError(f"bucket start {value!r} is not a time")
        return result

    return read


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
    return _bucket_of(bucket, dialect, hour)


def _floor_hour(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _ceil_hour(ts: datetime) -> datetime:
    floor = _floor_hour(ts)
    if floor == ts:
        return floor
    # In the last hour of 9999 there is no next hour: no whole hour follows ``ts`` either.
    return floor + timedelta(hours=1) if floor < _LAST_HOUR else ts


def _bucket_of(bucket: Bucket, dialect: str, ts: Any) -> ColumnElement[Any]:
    """The start of the bucket ``ts`` is in, as the database computes it (see _bucket_start)."""
    if dialect == "sqlite":
        return func.strftime(_SQLITE_BUCKET_FORMAT[bucket], ts)
    unit: ColumnElement[str] = literal_column(f"'{bucket}'")
    return func.date_trunc(unit, func.timezone(literal_column("'UTC'"), ts))


def _bucket_start(bucket: Bucket, dialect: str) -> ColumnElement[Any]:
    # Literals, not parameters (in _bucket_of): PostgreSQL matches GROUP BY to the select
    # list by text, and two bound parameters never match. timezone() first, or date_trunc
    # would cut days at the session's midnight instead of UTC's.
    return _bucket_of(bucket, dialect, EventRow.ts)


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


def sum_column(column: Any, dialect: str) -> ColumnElement[Any]:
    """A sum of a BIGINT column that cannot overflow: SQLite's ``sum`` raises past 2**63-1
    (``total`` adds in floating point); PostgreSQL already sums bigint as numeric."""
    return func.total(column) if dialect == "sqlite" else func.sum(column)


def _numeric_attribute(name: str, dialect: str) -> ColumnElement[float]:
    """The attribute as a float where it is a JSON number, else NULL (strings, booleans)."""
    if dialect == "sqlite":
        path = f'$."{name}"'
        is_number = func.json_type(EventRow.attributes, path).in_(("integer", "real"))
        return case((is_number, func.json_extract(EventRow.attributes, path)), else_=None)
    element = EventRow.attributes[name]
    return case((func.jsonb_typeof(element) == "number", element.as_float()), else_=None)


def list_dead_letters(
    session: Session, *, before_id: int | None = None, limit: int
) -> Sequence[DeadLetterRow]:
    """The newest (highest id) dead letters first; ``before_id`` is the last id of the
    previous page."""
    query = select(DeadLetterRow)
    if before_id is not None:
        query = query.where(DeadLetterRow.id < before_id)
    return session.scalars(query.order_by(DeadLetterRow.id.desc()).limit(limit)).all()


def database_ok(session: Session) -> bool:
    """Whether a trivial query succeeds."""
    try:
        session.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return False
    return True


def list_model_versions(session: Session) -> Sequence[ModelVersionRow]:
    """Every registered model version, by name and then oldest first."""
    query = select(ModelVersionRow).order_by(ModelVersionRow.name, ModelVersionRow.id)
    return session.scalars(query).all()


def get_model_version(session: Session, *, name: str, version: str) -> ModelVersionRow | None:
    """One model version, or None if it was never registered."""
    query = select(ModelVersionRow).where(
        ModelVersionRow.name == name, ModelVersionRow.version == version
    )
    return session.scalars(query).one_or_none()


def add_model_version(session: Session, *, row: ModelVersionRow) -> ModelVersionRow:
    """Insert ``row`` (flushed, not committed); ConflictError if its (name, version) exists.

    The unique constraint decides, so two concurrent uploads of one version cannot both win;
    the caller commits once the artifact is stored.
    """
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise ConflictError(f"model {row.name} version {row.version} exists already") from None
    return row


ACTIVE_DEPLOYMENT_STATES = ("canary", "rolling")


def list_deployments(
    session: Session, *, state: str | None = None, limit: int
) -> Sequence[DeploymentRow]:
    """Deployments newest first, optionally in one state."""
    query = select(DeploymentRow)
    if state is not None:
        query = query.where(DeploymentRow.state == state)
    return session.scalars(query.order_by(DeploymentRow.id.desc()).limit(limit)).all()


def get_deployment(session: Session, *, deployment_id: int) -> DeploymentRow | None:
    """One deployment, or None."""
    return session.get(DeploymentRow, deployment_id)


def active_deployments(session: Session) -> Sequence[DeploymentRow]:
    """Deployments still moving (canary or rolling), oldest first."""
    query = select(DeploymentRow).where(DeploymentRow.state.in_(ACTIVE_DEPLOYMENT_STATES))
    return session.scalars(query.order_by(DeploymentRow.id)).all()


def active_deployment_for_pipeline(session: Session, *, pipeline: str) -> DeploymentRow | None:
    """The deployment still moving on ``pipeline``, if there is one."""
    query = select(DeploymentRow).where(
        DeploymentRow.pipeline == pipeline,
        DeploymentRow.state.in_(ACTIVE_DEPLOYMENT_STATES),
    )
    return session.scalars(query.limit(1)).first()


def deployment_agents(
    session: Session, *, deployment_ids: Sequence[int]
) -> Sequence[DeploymentAgentRow]:
    """The agents of some deployments, canary first, then by agent id."""
    query = (
        select(DeploymentAgentRow)
        .where(DeploymentAgentRow.deployment_id.in_(deployment_ids))
        .order_by(
            DeploymentAgentRow.deployment_id,
            DeploymentAgentRow.phase,  # "canary" < "rest"
            DeploymentAgentRow.agent_id,
        )
    )
    return session.scalars(query).all()


def agents_by_id(session: Session, *, agent_ids: Sequence[str]) -> dict[str, AgentRow]:
    """The agents among ``agent_ids`` that ever reported, by id."""
    rows = session.scalars(select(AgentRow).where(AgentRow.agent_id.in_(agent_ids)))
    return {row.agent_id: row for row in rows}


def desired_states(session: Session, *, agent_ids: Sequence[str]) -> dict[str, DesiredStateRow]:
    """The desired states last issued to the agents among ``agent_ids``, by id."""
    query = select(DesiredStateRow).where(DesiredStateRow.agent_id.in_(agent_ids))
    return {row.agent_id: row for row in session.scalars(query)}


def desired_state_versions(session: Session) -> list[tuple[str, datetime]]:
    """When each agent's desired state was issued: what the broker should hold retained."""
    query = select(DesiredStateRow.agent_id, DesiredStateRow.updated_at)
    return [(agent_id, issued_at) for agent_id, issued_at in session.execute(query)]
