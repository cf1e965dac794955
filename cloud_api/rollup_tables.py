"""SQL tables of the rollups ingest keeps beside what it stores: events by hour (per series,
per value of one dimension, and in total) and summaries' signals by hour and by day.

Kept apart from ``tables.py`` (every other table), on its ``Base``: the migrations'
environment imports both modules, so ``Base.metadata`` holds every table.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, Float, Index, PrimaryKeyConstraint, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from cloud_api.tables import Base, UtcDateTime, core_table


class EventRollupRow(Base):
    """Count, sum, min and max of the score of one hour's events of one series.

    Kept by ingest in the transaction that stores the events (only the ones stored for the
    first time), so hourly and daily aggregates of the score read a few rows per hour instead
    of every event; ``bucket`` is the hour's start in UTC. Retention deletes whole hours.
    """

    __tablename__ = "event_rollups_hourly"

    bucket: Mapped[datetime] = mapped_column(UtcDateTime)
    agent_id: Mapped[str] = mapped_column(String(64))
    pipeline: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(64))
    events: Mapped[int] = mapped_column(BigInteger)
    score_sum: Mapped[float] = mapped_column(Float)
    score_min: Mapped[float] = mapped_column(Float)
    score_max: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        # Hour first: a range of hours is a range of the key. The values ride along in the
        # index (PostgreSQL INCLUDE), so a week of rollups is an index-only scan.
        PrimaryKeyConstraint(
            "bucket",
            "agent_id",
            "pipeline",
            "label",
            "kind",
            "model_version",
            postgresql_include=["events", "score_sum", "score_min", "score_max"],
        ),
    )


class EventRollupTotalRow(Base):
    """The same numbers for all events of an hour: a fleet-wide chart reads one row an hour."""

    __tablename__ = "event_rollups_hourly_total"

    bucket: Mapped[datetime] = mapped_column(UtcDateTime)
    events: Mapped[int] = mapped_column(BigInteger)
    score_sum: Mapped[float] = mapped_column(Float)
    score_min: Mapped[float] = mapped_column(Float)
    score_max: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        PrimaryKeyConstraint(
            "bucket", postgresql_include=["events", "score_sum", "score_min", "score_max"]
        ),
    )


ROLLUP_DIMENSIONS: dict[str, int] = {
    "agent_id": 64,
    "pipeline": 64,
    "label": 128,
    "kind": 64,
    "model_version": 64,
}
"""The event columns an aggregate groups or filters by, with their lengths in ``events``."""


def _rollup_by(dimension: str, length: int) -> Table:
    """The same numbers per hour and value of one ``dimension`` of the series.

    A chart grouped (or filtered) by one dimension reads one row per hour and value: a week
    by label is 168 x 5 rows here against 168 x every series in ``event_rollups_hourly``.
    Five tables of one shape, so Core tables from one function rather than five classes.
    """
    return Table(
        f"event_rollups_hourly_by_{dimension}",
        Base.metadata,
        Column("bucket", UtcDateTime(), nullable=False),
        Column(dimension, String(length), nullable=False),
        Column("events", BigInteger(), nullable=False),
        Column("score_sum", Float(), nullable=False),
        Column("score_min", Float(), nullable=False),
        Column("score_max", Float(), nullable=False),
        PrimaryKeyConstraint(
            "bucket",
            dimension,
            postgresql_include=["events", "score_sum", "score_min", "score_max"],
        ),
    )


EVENT_ROLLUPS_BY: dict[str, Table] = {
    dimension: _rollup_by(dimension, length) for dimension, length in ROLLUP_DIMENSIONS.items()
}
"""``event_rollups_hourly_by_{dimension}`` for every dimension, kept by ingest like the rest."""


class _SignalStats:
    """What a signal rollup row holds after its time: its series, count, sum, min and max."""

    agent_id: Mapped[str] = mapped_column(String(64))
    pipeline: Mapped[str] = mapped_column(String(64))
    signal: Mapped[str] = mapped_column(String(64))
    count: Mapped[int] = mapped_column(BigInteger)
    sum: Mapped[float] = mapped_column(Float)
    min: Mapped[float] = mapped_column(Float)
    max: Mapped[float] = mapped_column(Float)


def _signal_keys(table: str, time: str) -> tuple[PrimaryKeyConstraint | Index, ...]:
    """One agent's trend is a range of the primary key; the fleet's one signal over a month is
    read in the answer's order from the second index (no sort); retention deletes by ``time``.
    The values ride along (PostgreSQL INCLUDE), so a month is an index-only scan."""
    values = ["count", "sum", "min", "max"]
    return (
        PrimaryKeyConstraint("agent_id", "pipeline", "signal", time, postgresql_include=values),
        Index(
            f"ix_{table}_signal_series",
            "signal",
            "agent_id",
            "pipeline",
            time,
            postgresql_include=values,
        ),
        Index(f"ix_{table}_{time}", time),
    )


class SignalRollupRow(_SignalStats, Base):
    """Count, sum, min and max of one summary signal (``score``, ``rms_g``...) of one hour.

    Kept by ingest in the transaction that stores the summaries (only the ones stored for the
    first time), so a month of a machine's trend reads a few rows per hour; ``hour`` is the
    start (UTC) of the hour the summaries' ``window_start`` fell in. ``sum`` adds each
    summary's ``mean x count`` and stays within +/- the largest float (saturated, never
    infinite); ``count`` saturates at the largest 64-bit integer.
    """

    __tablename__ = "signal_rollups"
    __table_args__ = _signal_keys("signal_rollups", "hour")

    hour: Mapped[datetime] = mapped_column(UtcDateTime)


class SignalDayRollupRow(_SignalStats, Base):
    """``signal_rollups`` by day (UTC): what ingest adds to an hour it adds to its day too, in
    the same transaction, so a fleet's months by day read one row per series and day instead
    of adding up 24 hourly ones. Sums and counts saturate as the hourly ones do."""

    __tablename__ = "signal_rollups_daily"
    __table_args__ = _signal_keys("signal_rollups_daily", "day")

    day: Mapped[datetime] = mapped_column(UtcDateTime)


EVENT_ROLLUPS = core_table(EventRollupRow)
EVENT_ROLLUP_TOTALS = core_table(EventRollupTotalRow)
SIGNAL_ROLLUPS = core_table(SignalRollupRow)
SIGNAL_DAY_ROLLUPS = core_table(SignalDayRollupRow)
