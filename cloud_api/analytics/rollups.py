"""Hourly rollups of events and of summary signals: how ingest keeps them, how to rebuild them.

A rollup row holds count, sum, min and max of the score of one hour of one series (agent,
pipeline, label, kind, model version) in ``event_rollups_hourly``, of one value of one of
those dimensions in ``event_rollups_hourly_by_{dimension}``, or of all events of the hour in
``event_rollups_hourly_total``. Each level answers the questions its key covers with the
fewest rows: a chart by label reads five rows an hour, not one per series. Ingest adds the
events it stored for the first time to every level in the same transaction, so a duplicate
never counts twice and the rollups always equal a ``GROUP BY`` over the raw events. Sums and
counts add up and min/max combine, so any hour or day bucket of count/avg/min/max of the
score is answered from these rows.

Summaries' signals (``score``, ``rms_g``, a channel's mean...) roll up the same way into
``signal_rollups``, one row per agent, pipeline, signal and hour of the window start: each
summary adds its ``count``, its ``mean x count`` to the sum, and combines its min and max.
Only the summaries stored for the first time are added (``signal_rollup_rows``), in the
transaction that stores them, and the same rows added up by day (``signal_day_rows``) to
``signal_rollups_daily``, so a month by day reads one row per series and day.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

from sqlalchemy import ColumnElement, Connection, Insert, Table, case, func, literal, text
from sqlalchemy.dialects import postgresql, sqlite

from cloud_api.ingest.parse import EVENT_COLUMNS, EventValues
from cloud_api.rollup_tables import (
    EVENT_ROLLUP_TOTALS,
    EVENT_ROLLUPS,
    EVENT_ROLLUPS_BY,
    SIGNAL_DAY_ROLLUPS,
    SIGNAL_ROLLUPS,
)

SERIES = ("agent_id", "pipeline", "label", "kind", "model_version")
"""The event columns a rollup row is keyed by, after its hour."""


@dataclass(frozen=True)
class Level:
    """One rollup table and the event columns its rows are keyed by after the hour."""

    table: Table
    series: tuple[str, ...]

    @property
    def key(self) -> list[str]:
        return ["bucket", *self.series]


SERIES_LEVEL = Level(EVENT_ROLLUPS, SERIES)
TOTAL_LEVEL = Level(EVENT_ROLLUP_TOTALS, ())
BY_DIMENSION = {
    dimension: Level(table, (dimension,)) for dimension, table in EVENT_ROLLUPS_BY.items()
}
"""The level of each single dimension of the series."""
LEVELS = (SERIES_LEVEL, TOTAL_LEVEL, *BY_DIMENSION.values())


def level_for(columns: Iterable[str]) -> Level:
    """The smallest level whose key holds every one of ``columns`` (grouped or filtered on)."""
    wanted = set(columns)
    if not wanted:
        return TOTAL_LEVEL
    if len(wanted) == 1:
        return BY_DIMENSION[wanted.pop()]
    return SERIES_LEVEL


def hour_of(ts: datetime) -> datetime:
    """The start (UTC) of the hour ``ts`` falls in."""
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def day_of(ts: datetime) -> datetime:
    """The start (UTC) of the day ``ts`` falls in."""
    return ts.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def rollup_rows(events: Iterable[EventValues]) -> dict[Level, list[dict[str, Any]]]:
    """Every level's rows for ``events`` (rows of the events table), in key order.

    The series level is added up from the events (one hour computation per event); the
    coarser levels from the series rows, which are far fewer. Key order makes concurrent
    ingest transactions lock rollup rows in the same order, so they wait for each other
    instead of deadlocking.
    """
    series: dict[tuple[Any, ...], dict[str, Any]] = {}
    key_of = attrgetter(*SERIES)
    for event in events:
        score = event.score
        _add(series, SERIES_LEVEL, (hour_of(event.ts), *key_of(event)), 1, score, score, score)
    rows = {SERIES_LEVEL: [series[key] for key in sorted(series)]}
    for level in LEVELS[1:]:
        merged: dict[tuple[Any, ...], dict[str, Any]] = {}
        for row in rows[SERIES_LEVEL]:
            key = (row["bucket"], *(row[name] for name in level.series))
            _add(merged, level, key, row["events"], row["score_sum"], row["score_min"],
                 row["score_max"])  # fmt: skip
        rows[level] = [merged[key] for key in sorted(merged)]
    return rows


def _add(
    rows: dict[tuple[Any, ...], dict[str, Any]], level: Level, key: tuple[Any, ...],
    events: int, score_sum: float, score_min: float, score_max: float,
) -> None:  # fmt: skip
    row = rows.get(key)
    if row is None:
        rows[key] = {
            **dict(zip(level.key, key, strict=True)),
            "events": events,
            "score_sum": score_sum,
            "score_min": score_min,
            "score_max": score_max,
        }
        return
    row["events"] += events
    row["score_sum"] += score_sum
    row["score_min"] = min(row["score_min"], score_min)
    row["score_max"] = max(row["score_max"], score_max)


def rollup_upsert(level: Level, dialect: str) -> Insert:
    """Add rows (``rollup_rows``) to what ``level`` stores, on SQLite (whose scalar min/max
    take two arguments) or PostgreSQL (least/greatest)."""
    table = level.table
    statement = sqlite.insert(table) if dialect == "sqlite" else postgresql.insert(table)
    new = statement.excluded
    low, high = (func.min, func.max) if dialect == "sqlite" else (func.least, func.greatest)
    return statement.on_conflict_do_update(
        index_elements=level.key,
        set_={
            "events": table.c.events + new.events,
            "score_sum": table.c.score_sum + new.score_sum,
            "score_min": low(table.c.score_min, new.score_min),
            "score_max": high(table.c.score_max, new.score_max),
        },
    )


_STAGING_TYPE = {
    "id": "text",
    "agent_id": "text",
    "pipeline": "text",
    "kind": "text",
    "state": "text",
    "label": "text",
    "score": "float8",
    "ts": "timestamptz",
    "seq": "int8",
    "model_name": "text",
    "model_version": "text",
    "model_sha256": "text",
    "attributes": "text",  # JSON text, cast to jsonb by the INSERT
    "received_at": "timestamptz",
}
STAGING_TYPES = [_STAGING_TYPE[name] for name in EVENT_COLUMNS]
"""Their PostgreSQL types, for binary COPY (``copy.set_types``)."""

_NAMES = ", ".join(EVENT_COLUMNS)
_SERIES = ", ".join(SERIES)
_HOUR = "timezone('UTC', date_trunc('hour', timezone('UTC', ts)))"

POSTGRES_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS ingest_staging ("
    + ", ".join(f"{name} {kind}" for name, kind in zip(EVENT_COLUMNS, STAGING_TYPES, strict=True))
    + ") ON COMMIT DELETE ROWS"
)
"""A per-connection table the batch is COPYed into, emptied by every commit."""
POSTGRES_SORT_MEMORY = "SET LOCAL work_mem = '64MB'"
"""For this transaction only: sorting a batch by id (20 000 events are ~6 MB) in memory, not
in files (PostgreSQL's default is 4 MB; the insert took a third longer with the spill)."""
POSTGRES_COPY = f"COPY ingest_staging ({_NAMES}) FROM STDIN (FORMAT BINARY)"
POSTGRES_COPY_EVENTS = f"COPY events ({_NAMES}) FROM STDIN (FORMAT BINARY)"
"""Straight into ``events``: a batch of new ids (the usual one) needs no staging table."""
EVENT_TYPES = [("jsonb" if name == "attributes" else kind) for name, kind in
               zip(EVENT_COLUMNS, STAGING_TYPES, strict=True)]  # fmt: skip
"""The events table's types, for binary COPY; ``attributes`` is JSON text already, sent as
jsonb's binary form (a version byte, then the text: ``writers._json_as_is``)."""

_UPSERT_SET = """
    events = r.events + excluded.events,
    score_sum = r.score_sum + excluded.score_sum,
    score_min = least(r.score_min, excluded.score_min),
    score_max = greatest(r.score_max, excluded.score_max)"""


_RAW_VALUES = "count(*), sum(score), min(score), max(score)"
_ROLLED_VALUES = "sum(events), sum(score_sum), min(score_min), max(score_max)"


def _postgres_rollup(name: str, level: Level) -> str:
    series = "".join(f", {column}" for column in level.series)
    key = f"bucket{series}"
    groups = ", ".join(str(n) for n in range(1, len(level.key) + 1))
    if level is SERIES_LEVEL:  # the series rows are this level's rows
        values, grouped = "events, score_sum, score_min, score_max", ""
    else:
        values, grouped = _ROLLED_VALUES, f" GROUP BY {groups}"
    return f"""{name} AS (
    INSERT INTO {level.table.name} AS r ({key}, events, score_sum, score_min, score_max)
    SELECT {key}, {values} FROM series{grouped} ORDER BY {groups}
    ON CONFLICT ({key}) DO UPDATE SET{_UPSERT_SET}
)"""  # noqa: S608 (constants only, no input)


_SERIES_GROUPS = ", ".join(str(n) for n in range(1, len(SERIES_LEVEL.key) + 1))
POSTGRES_INSERT = f"""
WITH stored AS (
    INSERT INTO events ({_NAMES})
    SELECT {_NAMES.replace("attributes", "attributes::jsonb")} FROM ingest_staging ORDER BY id
    ON CONFLICT (id) DO NOTHING
    RETURNING ts, score, {_SERIES}
), series AS (
    SELECT {_HOUR} AS bucket, {_SERIES}, count(*) AS events, sum(score) AS score_sum,
           min(score) AS score_min, max(score) AS score_max
    FROM stored GROUP BY {_SERIES_GROUPS}
), {", ".join(_postgres_rollup(f"rolled_{n}", level) for n, level in enumerate(LEVELS))}
SELECT count(*) FROM stored
"""  # noqa: S608 (constants only, no input)
"""From the staged batch, the events whose id is not stored yet, and only those (RETURNING)
added to every rollup level; the result is how many were new. The new events are grouped
once, into series rows (``series``); every coarser level adds those up, as ``rollup_rows``
and ``backfill`` do, instead of grouping the events again. Sorting by id, and rollup rows
by key, makes concurrent transactions take locks in the same order."""


def backfill(connection: Connection) -> None:
    """Rebuild every rollup row from the stored events (the migration, or after a bulk load).

    The series level is built from the events and every other level from the series rows
    (counts and sums add, min and max combine): one pass over the events, not one per level.
    """
    if connection.dialect.name == "postgresql":
        hour = _HOUR
    else:
        # The text UtcDateTime stores on SQLite, so keys equal the ones ingest writes.
        hour = "strftime('%Y-%m-%d %H:00:00.000000', ts)"
    for level in LEVELS:
        connection.execute(level.table.delete())
    _insert_grouped(connection, SERIES_LEVEL, "events", hour, _RAW_VALUES)
    for level in LEVELS:
        if level is not SERIES_LEVEL:
            _insert_grouped(connection, level, EVENT_ROLLUPS.name, "bucket", _ROLLED_VALUES)


def _insert_grouped(
    connection: Connection, level: Level, source: str, bucket: str, values: str
) -> None:
    series = "".join(f", {column}" for column in level.series)
    groups = ", ".join(str(n) for n in range(1, len(level.key) + 1))
    connection.execute(
        text(
            # Built from constants only; in time order, as ingest writes them.
            f"INSERT INTO {level.table.name} (bucket{series}, events, score_sum, "  # noqa: S608
            f"score_min, score_max) SELECT {bucket}{series}, {values} "
            f"FROM {source} GROUP BY {groups} ORDER BY 1"
        )
    )


SIGNAL_KEY = ["agent_id", "pipeline", "signal", "hour"]
"""What a ``signal_rollups`` row is keyed by (and sorted by, for the lock order)."""
SIGNAL_DAY_KEY = ["agent_id", "pipeline", "signal", "day"]
"""What a ``signal_rollups_daily`` row is keyed by."""
INT64_MAX = 2**63 - 1
FLOAT_MAX = sys.float_info.max


def signal_rollup_rows(summaries: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The ``signal_rollups`` rows of ``summaries`` (``summaries`` rows, stored for the first
    time), one per agent, pipeline, signal and hour, in key order.

    Each signal adds its count and its ``mean x count``; counts saturate at the largest 64-bit
    integer and sums at +/- the largest float, as the upserts do.
    """
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for summary in summaries:
        hour = hour_of(summary["window_start"])
        for signal, stats in summary["signals"].items():
            key = (summary["agent_id"], summary["pipeline"], signal, hour)
            count, mean = stats["count"], stats["mean"]
            row = rows.get(key)
            if row is None:
                rows[key] = {
                    **dict(zip(SIGNAL_KEY, key, strict=True)),
                    "count": count,
                    "sum": _clamp(mean * count),
                    "min": stats["min"],
                    "max": stats["max"],
                }
                continue
            row["count"] = min(row["count"] + count, INT64_MAX)
            row["sum"] = _clamp(row["sum"] + mean * count)
            row["min"] = min(row["min"], stats["min"])
            row["max"] = max(row["max"], stats["max"])
    return [rows[key] for key in sorted(rows)]


def signal_day_rows(hour_rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``signal_rollup_rows`` added up by day: the ``signal_rollups_daily`` rows of the same
    summaries, in key order (counts and sums saturate as the hourly ones do)."""
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for hour_row in hour_rows:
        day = day_of(hour_row["hour"])
        key = (hour_row["agent_id"], hour_row["pipeline"], hour_row["signal"], day)
        row = rows.get(key)
        if row is None:
            rows[key] = {
                **dict(zip(SIGNAL_DAY_KEY, key, strict=True)),
                **{name: hour_row[name] for name in ("count", "sum", "min", "max")},
            }
            continue
        row["count"] = min(row["count"] + hour_row["count"], INT64_MAX)
        row["sum"] = _clamp(row["sum"] + hour_row["sum"])
        row["min"] = min(row["min"], hour_row["min"])
        row["max"] = max(row["max"], hour_row["max"])
    return [rows[key] for key in sorted(rows)]


def _clamp(value: float) -> float:
    """``value`` within +/- the largest float (an overflowed sum is infinite, never NaN: its
    terms are finite)."""
    return max(-FLOAT_MAX, min(FLOAT_MAX, value))


def signal_upsert(dialect: str, *, daily: bool = False) -> Insert:
    """Add ``signal_rollup_rows`` to what ``signal_rollups`` stores (``signal_day_rows`` to
    ``signal_rollups_daily`` when ``daily``): counts and sums add (saturating, so no value the
    contract accepts makes the database refuse the batch), min and max combine."""
    table = SIGNAL_DAY_ROLLUPS if daily else SIGNAL_ROLLUPS
    old = {name: table.c[name] for name in ("count", "sum", "min", "max")}
    count: ColumnElement[Any]
    total: ColumnElement[Any]
    low: ColumnElement[Any]
    high: ColumnElement[Any]
    if dialect == "sqlite":
        statement: sqlite.Insert | postgresql.Insert = sqlite.insert(table)
        new = statement.excluded
        # SQLite turns an overflowing integer sum into a float, and a float one into inf.
        count = func.min(old["count"] + new["count"], INT64_MAX)
        total = func.max(func.min(old["sum"] + new["sum"], FLOAT_MAX), -FLOAT_MAX)
        low, high = func.min(old["min"], new["min"]), func.max(old["max"], new["max"])
    else:
        statement = postgresql.insert(table)
        new = statement.excluded
        # PostgreSQL refuses a bigint or float8 sum that overflows: test before adding.
        count = case(
            (old["count"] > INT64_MAX - new["count"], literal(INT64_MAX)),
            else_=old["count"] + new["count"],
        )
        same_sign = func.sign(old["sum"]) == func.sign(new["sum"])
        overflows = same_sign & (func.abs(old["sum"]) > FLOAT_MAX - func.abs(new["sum"]))
        total = case((overflows, func.sign(old["sum"]) * FLOAT_MAX), else_=old["sum"] + new["sum"])
        low, high = func.least(old["min"], new["min"]), func.greatest(old["max"], new["max"])
    return statement.on_conflict_do_update(
        index_elements=SIGNAL_DAY_KEY if daily else SIGNAL_KEY,
        set_={"count": count, "sum": total, "min": low, "max": high},
    )
