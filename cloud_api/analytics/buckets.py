"""Time buckets of dashboards' series: aligned to UTC, computed by the database.

Aggregates and bandwidth series both cut time into minute, hour or day buckets; the bucket a
value falls in is computed in SQL (``bucket_of``), so a week comes back as a row per bucket.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, literal_column
from sqlalchemy.orm import Session

from cloud_api.analytics import rollups
from cloud_api.schemas import Bucket
from cloud_api.tables import UtcDateTime

BUCKET_WIDTH: dict[Bucket, timedelta] = {
    "minute": timedelta(minutes=1),
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
}
MAX_BUCKETS = 100_000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LAST_HOUR = datetime(9999, 12, 31, 23, tzinfo=UTC)
# SQLite stores ts as fixed-width naive UTC text ("2026-11-22 10:04:05.123456"), so
# strftime cuts it to the bucket start without any time zone arithmetic.
_SQLITE_BUCKET_FORMAT: dict[Bucket, str] = {
    "minute": "%Y-%m-%d %H:%M:00",
    "hour": "%Y-%m-%d %H:00:00",
    "day": "%Y-%m-%d 00:00:00",
}


def bucket_count(*, since: datetime, until: datetime, bucket: Bucket) -> int:
    """How many buckets ``[since, until)`` touches (buckets are aligned to UTC midnight)."""
    width = BUCKET_WIDTH[bucket]
    first = (since - _EPOCH) // width
    last = (until - timedelta(microseconds=1) - _EPOCH) // width
    return last - first + 1


def bucket_of(bucket: Bucket, dialect: str, ts: Any) -> ColumnElement[Any]:
    """The start of the bucket ``ts`` is in, as the database computes it.

    Literals, not parameters: PostgreSQL matches GROUP BY to the select list by text, and two
    bound parameters never match. timezone() first, or date_trunc would cut days at the
    session's midnight instead of UTC's.
    """
    if dialect == "sqlite":
        return func.strftime(_SQLITE_BUCKET_FORMAT[bucket], ts)
    unit: ColumnElement[str] = literal_column(f"'{bucket}'")
    return func.date_trunc(unit, func.timezone(literal_column("'UTC'"), ts))


def ceil_hour(ts: datetime) -> datetime:
    """The first whole hour at or after ``ts`` (``ts`` itself in the last hour of 9999)."""
    floor = rollups.hour_of(ts)
    if floor == ts:
        return floor
    # In the last hour of 9999 there is no next hour: no whole hour follows ``ts`` either.
    return floor + timedelta(hours=1) if floor < _LAST_HOUR else ts


def utc_reader(session: Session) -> Callable[[Any], datetime]:
    """How ``UtcDateTime`` reads a bucket start as this database gives it (naive UTC text on
    SQLite), for rows read without type processing: each start is converted once."""
    dialect = session.get_bind().dialect
    process = UtcDateTime().dialect_impl(dialect).result_processor(dialect, None)

    def read(value: Any) -> datetime:
        result = process(value) if process is not None else value
        if not isinstance(result, datetime):
            raise TypeError(f"bucket start {value!r} is not a time")
        return result

    return read
