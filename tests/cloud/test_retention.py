"""Retention deletes what is older than the horizon in bounded batches (SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, cast

import pytest
from sqlalchemy import Engine, Table, event, func, insert, select, text

from cloud_api.analytics import rollups
from cloud_api.db import AdvisoryLock, create_db_engine, migrate
from cloud_api.retention import Retention
from cloud_api.rollup_tables import EVENT_ROLLUPS, SIGNAL_DAY_ROLLUPS, SIGNAL_ROLLUPS
from cloud_api.tables import DEAD_LETTERS, EVENTS, SUMMARIES, EscalationRow
from shared.errors import ConfigError
from shared.messages import new_event_id, utcnow
from tests.cloud.conftest import AppFactory
from tests.cloud.helpers import MODEL, wait_until

NOW = datetime.fromisoformat("2026-03-10T12:34:56+00:00")
HORIZON = datetime.fromisoformat("2026-03-03T12:00:00+00:00")
"""Seven days before NOW, cut to the hour."""


def event_row(ts: datetime, label: str = "imbalance") -> dict[str, Any]:
    return {
        "id": new_event_id(),
        "agent_id": "press-1",
        "pipeline": "spindle-vibration",
        "kind": "anomaly",
        "state": "instant",
        "label": label,
        "score": 0.5,
        "ts": ts,
        "seq": 0,
        "model_name": MODEL.name,
        "model_version": MODEL.version,
        "model_sha256": MODEL.sha256,
        "attributes": {},
        "received_at": ts,
    }


def summary_row(start: datetime) -> dict[str, Any]:
    return {
        "agent_id": "press-1",
        "pipeline": "spindle-vibration",
        "window_start": start,
        "window_end": start + timedelta(minutes=1),
        "samples_in": 10,
        "inferences": 10,
        "gated": 0,
        "events": 0,
        "events_by_label": {},
        "signals": {"score": {"min": 0.1, "mean": 0.2, "max": 0.3, "count": 10}},
        "raw_bytes": 100,
        "sent_bytes": 10,
        "model_name": MODEL.name,
        "model_version": MODEL.version,
        "model_sha256": MODEL.sha256,
        "received_at": start,
    }


def dead_row(at: datetime) -> dict[str, Any]:
    return {"topic": "t", "payload": "{", "payload_size": 1, "reason": "r", "received_at": at}


def escalation_row(at: datetime) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()), "agent_id": "gw-1", "pipeline": "p", "event_id": None,
        "sample_id": None, "edge_model": "m 1", "edge_label": "x", "edge_score": 0.5,
        "ts": at, "answered_at": at, "outcome": "refused", "reason": "over quota", "result": {},
    }  # fmt: skip


ESCALATIONS = cast(Table, EscalationRow.__table__)

OLD_EVENTS = 7
# Old: in the hour before the horizon (three of them), a day and thirty days before.
OLD_TIMES = [
    *(HORIZON - timedelta(days=d, minutes=m) for d in (0, 1, 30) for m in (1, 50)),
    HORIZON - timedelta(microseconds=1),
]
NEW_TIMES = [HORIZON, HORIZON + timedelta(minutes=5), NOW - timedelta(minutes=1)]


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(database_url)
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(insert(EVENTS), [event_row(ts) for ts in OLD_TIMES + NEW_TIMES])
        rollups.backfill(conn)
        summaries = [summary_row(ts) for ts in OLD_TIMES[:4] + NEW_TIMES]
        conn.execute(insert(SUMMARIES), summaries)
        hours = rollups.signal_rollup_rows(summaries)
        conn.execute(insert(SIGNAL_ROLLUPS), hours)
        conn.execute(insert(SIGNAL_DAY_ROLLUPS), rollups.signal_day_rows(hours))
        conn.execute(insert(DEAD_LETTERS), [dead_row(ts) for ts in OLD_TIMES[:2] + NEW_TIMES])
        conn.execute(insert(ESCALATIONS), [escalation_row(ts) for ts in OLD_TIMES[:3] + NEW_TIMES])
    yield engine
    engine.dispose()


def count_deletes(engine: Engine) -> dict[str, int]:
    """DELETE statements sent to the database, by table, counted as they go out."""
    counts: dict[str, int] = {}

    @event.listens_for(engine, "before_cursor_execute")
    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM"):
            table = statement.split()[2]
            counts[table] = counts.get(table, 0) + 1

    return counts


def remaining(engine: Engine, table: str, column: str) -> list[datetime]:
    with engine.connect() as conn:
        rows = conn.execute(text(f"SELECT {column} FROM {table} ORDER BY {column}"))
        return [value if isinstance(value, datetime) else _parse(value) for (value,) in rows]


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value + "+00:00")  # SQLite keeps naive UTC text


def test_old_rows_go_new_rows_stay_in_bounded_batches(engine: Engine) -> None:
    batches: list[tuple[str, int]] = []
    deletes = count_deletes(engine)
    retention = Retention(
        engine=engine,
        days=7,
        batch=3,
        interval_s=60,
        observer=lambda table, rows: batches.append((table, rows)),
        clock=lambda: NOW,
    )

    deleted = retention.run_once()

    assert retention.horizon() == HORIZON
    assert deleted == {
        "events": OLD_EVENTS,
        # One series: every level of rollups has a row for each of the three old hours.
        **{level.table.name: 3 for level in rollups.LEVELS},
        "summaries": 4,
        # Two old hours of the summaries' signal (two summaries each).
        "signal_rollups": 2,
        # Their two days, and a day goes whole once its start is past the horizon.
        "signal_rollups_daily": 2,
        "dead_letters": 2,
        # tests/cloud/test_samples.py has samples (blobs with the rows) and feedback.
        "event_feedback": 0,
        "escalations": 3,
        "samples": 0,
    }
    assert [rows for table, rows in batches if table == "events"] == [3, 3, 1]
    assert [rows for table, rows in batches if table == "summaries"] == [3, 1]
    assert max(rows for _, rows in batches) <= 3
    # One DELETE per batch; a full last batch costs one more that finds nothing.
    assert deletes == {
        "events": 3,
        **{level.table.name: 2 for level in rollups.LEVELS},
        "summaries": 2,
        "signal_rollups": 1,
        "signal_rollups_daily": 1,
        "dead_letters": 1,
        "event_feedback": 1,
        "escalations": 2,
    }
    assert remaining(engine, "events", "ts") == [*NEW_TIMES]
    assert remaining(engine, "summaries", "window_start") == [*NEW_TIMES]
    assert remaining(engine, "dead_letters", "received_at") == [*NEW_TIMES]
    assert remaining(engine, "escalations", "answered_at") == [*NEW_TIMES]
    assert remaining(engine, "signal_rollups", "hour") == [HORIZON, rollups.hour_of(NOW)]
    assert remaining(engine, "signal_rollups_daily", "day") == [rollups.day_of(NOW)]
    assert min(remaining(engine, "event_rollups_hourly", "bucket")) == HORIZON

    assert retention.run_once() == dict.fromkeys(deleted, 0)


def test_rollups_still_equal_raw_events_after_retention(engine: Engine) -> None:
    Retention(engine=engine, days=7, batch=2, interval_s=60, clock=lambda: NOW).run_once()

    with engine.connect() as conn:
        raw = conn.execute(select(func.count()).select_from(EVENTS)).scalar_one()
        rolled = conn.execute(select(func.sum(EVENT_ROLLUPS.c.events))).scalar_one()
        levels = {
            conn.execute(select(func.sum(level.table.c.events))).scalar_one()
            for level in rollups.LEVELS
        }
    assert raw == rolled == len(NEW_TIMES)
    assert levels == {raw}


@pytest.mark.postgres
def test_one_replica_at_a_time_on_postgresql(postgres_url: str) -> None:
    engine = create_db_engine(postgres_url)
    migrate(engine)
    retention = Retention(engine=engine, days=7, batch=10, interval_s=60, clock=lambda: NOW)
    try:
        with engine.connect() as other:
            other.execute(text("SELECT pg_advisory_lock(:k)"), {"k": AdvisoryLock.RETENTION})
            assert retention.run_once() is None  # another replica holds the round
            other.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": AdvisoryLock.RETENTION})
        assert retention.run_once() is not None
    finally:
        engine.dispose()


def test_bad_settings_are_refused(engine: Engine) -> None:
    with pytest.raises(ConfigError, match="days must be at least 1"):
        Retention(engine=engine, days=0, batch=10, interval_s=1)
    with pytest.raises(ConfigError, match="batch must be at least 1"):
        Retention(engine=engine, days=1, batch=0, interval_s=1)


@pytest.mark.integration
def test_the_app_runs_retention_and_counts_it(make_api: AppFactory, database_url: str) -> None:
    engine = create_db_engine(database_url)
    migrate(engine)
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(insert(EVENTS), [event_row(now - timedelta(days=40)), event_row(now)])
    engine.dispose()

    with make_api(retention_days=30, retention_batch=1) as api:

        def counted() -> bool:
            metrics = api.get("/metrics").text
            return 'aiot_retention_deleted_rows_total{table="events"} 1.0' in metrics

        wait_until(counted, what="retention to delete the old event")
        items = api.get("/api/v1/events", params={"since": "2000-01-01T00:00Z"}).json()["items"]
    assert len(items) == 1


@pytest.mark.integration
def test_no_retention_unless_configured(make_api: AppFactory) -> None:
    with make_api(retention_days=0) as api:
        assert api.app.state.retention is None  # type: ignore[attr-defined]
