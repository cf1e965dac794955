"""Retention: delete events, rollups, summaries, signal rollups, dead letters, event feedback,
escalations and samples (rows, labels and blobs) older than the horizon.

Deletes go in bounded batches, each its own short transaction, so ingest and readers never
wait behind one huge DELETE and a crash loses at most one batch of work. The horizon is cut
to a whole hour: events and their hourly rollups then go together, and aggregates over what
is left agree with the raw events; summaries and their signals' hourly rollups likewise.
With several API replicas on PostgreSQL, one of them holds an advisory lock for the round
and the others skip it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Connection, Engine, Table, delete, select, text, tuple_
from sqlalchemy.exc import SQLAlchemyError

from cloud_api.analytics.rollups import LEVELS, SIGNAL_DAY_KEY, SIGNAL_KEY, hour_of
from cloud_api.db import AdvisoryLock
from cloud_api.queries.samples import delete_samples, oldest_samples
from cloud_api.registry import ArtifactStore
from cloud_api.rollup_tables import SIGNAL_DAY_ROLLUPS, SIGNAL_ROLLUPS
from cloud_api.samples import blob_key
from cloud_api.tables import DEAD_LETTERS, EVENTS, SUMMARIES, EscalationRow, EventFeedbackRow
from shared.errors import ConfigError
from shared.messages import utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetentionTable:
    """A table retention purges: the key a batch is chosen by, and the time column the
    horizon applies to."""

    table: Table
    key: tuple[str, ...]
    age: str


RETENTION_TABLES = (
    RetentionTable(EVENTS, ("id",), "ts"),
    *(RetentionTable(level.table, tuple(level.key), "bucket") for level in LEVELS),
    RetentionTable(SUMMARIES, ("id",), "window_start"),
    RetentionTable(SIGNAL_ROLLUPS, tuple(SIGNAL_KEY), "hour"),
    # A day goes when its start passes the horizon (its last hours may still be in the hourly
    # rows, which a day query at the horizon's edge reads instead).
    RetentionTable(SIGNAL_DAY_ROLLUPS, tuple(SIGNAL_DAY_KEY), "day"),
    RetentionTable(DEAD_LETTERS, ("id",), "received_at"),
    # People's verdicts go with the events (and samples) they were about.
    RetentionTable(cast(Table, EventFeedbackRow.__table__), ("id",), "created_at"),
    # The cloud's answers: an agent resends an escalation for minutes, never for days.
    RetentionTable(cast(Table, EscalationRow.__table__), ("id",), "answered_at"),
)


def delete_batch(conn: Connection, target: RetentionTable, *, horizon: datetime, limit: int) -> int:
    """Delete up to ``limit`` of the oldest rows of ``target`` older than ``horizon``.

    ``DELETE ... WHERE key IN (SELECT key ... ORDER BY age LIMIT n)``: the age index finds
    the oldest rows, and the batch stays bounded whatever the backlog.
    """
    table = target.table
    key = [table.c[name] for name in target.key]
    age = table.c[target.age]
    oldest = select(*key).where(age < horizon).order_by(age).limit(limit)
    result = conn.execute(delete(table).where(tuple_(*key).in_(oldest)))
    return int(result.rowcount)


class Retention:
    """Deletes what is older than ``days`` every ``interval_s``; ``run_once`` does one round."""

    def __init__(
        self,
        *,
        engine: Engine,
        days: int,
        batch: int,
        interval_s: float,
        observer: Callable[[str, int], None] | None = None,
        clock: Callable[[], datetime] = utcnow,
        artifacts: ArtifactStore | None = None,
    ) -> None:
        if days < 1:
            raise ConfigError(f"retention days must be at least 1, not {days}")
        if batch < 1:
            raise ConfigError(f"retention batch must be at least 1, not {batch}")
        self._engine = engine
        self._days = days
        self._batch = batch
        self._interval_s = interval_s
        self._observer = observer
        self._clock = clock
        self._artifacts = artifacts
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def horizon(self) -> datetime:
        """Rows older than this go: ``days`` ago, cut to the hour so rollups go with events."""
        return hour_of(self._clock() - timedelta(days=self._days))

    def run_once(self) -> dict[str, int] | None:
        """Delete everything older than the horizon, batch by batch; rows deleted per table.

        None when another replica holds the round (PostgreSQL) or the thread is stopping.
        """
        horizon = self.horizon()
        with self._engine.connect() as lock:
            if not self._lock(lock):
                log.debug("retention: another replica is running this round")
                return None
            try:
                deleted = {
                    target.table.name: self._purge(target, horizon) for target in RETENTION_TABLES
                }
                deleted["samples"] = self._purge_samples(horizon)
            finally:
                self._unlock(lock)
        if any(deleted.values()):
            log.info("retention deleted rows older than %s: %s", horizon.isoformat(), deleted)
        return deleted

    def _purge(self, target: RetentionTable, horizon: datetime) -> int:
        total = 0
        while not self._stop.is_set():
            with self._engine.begin() as conn:
                count = delete_batch(conn, target, horizon=horizon, limit=self._batch)
            if count and self._observer is not None:
                self._observer(target.table.name, count)
            total += count
            if count < self._batch:
                break
        return total

    def _purge_samples(self, horizon: datetime) -> int:
        """Samples go batch by batch: rows and labels in one transaction, then their blobs (a
        crash between leaves blobs without rows, never rows without blobs)."""
        total = 0
        while not self._stop.is_set():
            with self._engine.begin() as conn:
                batch = oldest_samples(conn, horizon=horizon, limit=self._batch)
                count = delete_samples(conn, [sample_id for sample_id, _ in batch]) if batch else 0
            if self._artifacts is not None:
                for sample_id, agent_id in batch:
                    self._artifacts.delete(blob_key(agent_id, sample_id))
            if count and self._observer is not None:
                self._observer("samples", count)
            total += count
            if len(batch) < self._batch:
                break
        return total

    def _lock(self, conn: Connection) -> bool:
        if conn.dialect.name != "postgresql":
            return True  # SQLite has one writer at a time anyway
        key = {"key": AdvisoryLock.RETENTION}
        locked = bool(conn.execute(text("SELECT pg_try_advisory_lock(:key)"), key).scalar())
        conn.commit()  # do not sit idle in a transaction while the batches run
        return locked

    def _unlock(self, conn: Connection) -> None:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": AdvisoryLock.RETENTION})
            conn.commit()

    def start(self) -> None:
        """Run a round now and then every ``interval_s`` in a thread, until ``stop``."""
        if self._thread is not None:
            raise RuntimeError("Retention.start() called twice")
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the batch in hand and join the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                self.run_once()
            except SQLAlchemyError as exc:
                if not failing:
                    log.error("retention cannot delete old rows: %s; retrying next round", exc)
                    failing = True
            else:
                if failing:
                    log.info("retention works again")
                    failing = False
            self._stop.wait(self._interval_s)
