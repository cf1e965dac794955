"""The SQL write paths of ingest: one parsed batch in ONE transaction, on SQLite or PostgreSQL.

Events go in with ``INSERT ... ON CONFLICT (id) DO NOTHING`` (so redelivery inserts nothing)
and only the ones really inserted are added to the hourly rollups (``analytics/rollups.py``);
pipeline summaries likewise on their window ``(agent_id, pipeline, window_start)``, and the
ones really inserted (``RETURNING`` their key) are added to the signals' hourly rollups; statuses
are upserts of ``agents``; dead letters are plain inserts (a retained one only if no earlier
run kept it). Both databases first insert the whole batch under a savepoint, as if every
event were new (the usual case), and add its rollup rows computed ahead; when one was stored
already (a redelivery, an id twice in a batch) they roll back to the savepoint: SQLite then
reads which events are new under its write lock and inserts those, PostgreSQL COPYs the batch
into a staging table and inserts the new ones from it in one statement.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from psycopg.errors import UniqueViolation
from psycopg.types.json import set_json_dumps
from sqlalchemy import Connection, Engine, Insert, Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from cloud_api.analytics import rollups
from cloud_api.ingest.parse import EVENT_COLUMNS, EventValues, Work
from cloud_api.tables import AGENTS, DEAD_LETTERS, EVENTS, SUMMARIES, sqlite_utc_text
from shared.errors import ConfigError
from shared.messages import AgentStatus

SUMMARY_KEY = ["agent_id", "pipeline", "window_start"]
SQLITE_IDS_PER_QUERY = 500
"""Event ids looked up per query (SQLite limits bound parameters)."""

UpsertInsert = sqlite.Insert | postgresql.Insert


@dataclass(frozen=True, slots=True)
class BatchStats:
    """What one committed batch did; handed to the ``observer`` (e.g. Prometheus metrics)."""

    messages: int = 0
    events_stored: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    statuses: int = 0
    summaries_stored: int = 0
    summary_duplicates: int = 0

    def __add__(self, other: BatchStats) -> BatchStats:
        return BatchStats(
            self.messages + other.messages,
            self.events_stored + other.events_stored,
            self.duplicates + other.duplicates,
            self.dead_letters + other.dead_letters,
            self.statuses + other.statuses,
            self.summaries_stored + other.summaries_stored,
            self.summary_duplicates + other.summary_duplicates,
        )


def is_transient(exc: Exception) -> bool:
    """A failure of the database itself (retry the batch), not of the data (isolate it)."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


class Writer:
    """Commits one parsed batch in one transaction; a subclass per database stores events."""

    def __init__(self, engine: Engine, insert: Callable[[Table], UpsertInsert]) -> None:
        self._engine = engine
        # The dialect's INSERT, which knows ON CONFLICT (Core's generic one does not).
        self._insert = insert
        # RETURNING the key of each summary really inserted: only those feed the signal
        # rollups (and their number is how many were new; psycopg's executemany reports no
        # row count).
        self._insert_summaries: Insert = (
            insert(SUMMARIES)
            .on_conflict_do_nothing(index_elements=SUMMARY_KEY)
            .returning(*(SUMMARIES.c[name] for name in SUMMARY_KEY))
        )
        self._upsert_signals = rollups.signal_upsert(engine.dialect.name)
        self._upsert_signal_days = rollups.signal_upsert(engine.dialect.name, daily=True)

    parse_ahead = False
    """Whether the worker parses (and ``prepare``s) the next batch in its parser thread while
    this one is committed. Only where the database works through a batch in a few long waits
    without the GIL (PostgreSQL's COPY and INSERT ... SELECT): SQLite's executemany takes the
    GIL back for every row, and a busy parser thread makes it wait for it each time (measured
    3x slower), so SQLite parses in the writer thread, between transactions."""

    def prepare(self, work: Work) -> None:
        """Do what needs no database before the transaction: nothing by default."""

    def commit(self, work: Work, messages: int) -> BatchStats:
        """Store ``work`` in one transaction; what it did. Database errors raise."""
        stored = summaries = 0
        with self._engine.begin() as conn:
            if work.events:
                stored = self._store_events(conn, work)
            if work.summaries:
                summaries = self._store_summaries(conn, work.summaries)
            for status, seen_at in work.statuses:
                self._upsert_agent(conn, status, seen_at)
            dead = [
                {key: value for key, value in row.items() if key != "retained"}
                for row in work.dead
                if not (row["retained"] and _kept_before(conn, row))
            ]
            if dead:
                conn.execute(self._insert(DEAD_LETTERS), dead)
        return BatchStats(
            messages=messages,
            events_stored=stored,
            duplicates=len(work.events) - stored,
            dead_letters=len(dead),
            statuses=len(work.statuses),
            summaries_stored=summaries,
            summary_duplicates=len(work.summaries) - summaries,
        )

    def _store_events(self, conn: Connection, work: Work) -> int:
        """Insert the events not stored yet and add them to the rollups; how many were new."""
        raise NotImplementedError

    def _store_summaries(self, conn: Connection, summaries: list[dict[str, Any]]) -> int:
        """Insert the summaries not stored yet and add their signals to the rollups; how many
        were new."""
        stored = {tuple(row) for row in conn.execute(self._insert_summaries, summaries)}
        fresh = []
        for summary in summaries:
            key = tuple(summary[name] for name in SUMMARY_KEY)
            if key in stored:
                stored.discard(key)  # the same window twice in one batch is stored once
                fresh.append(summary)
        rows = rollups.signal_rollup_rows(fresh)
        if rows:
            conn.execute(self._upsert_signals, rows)
            conn.execute(self._upsert_signal_days, rollups.signal_day_rows(rows))
        return len(fresh)

    def _upsert_agent(
        self, conn: Connection, status: AgentStatus, seen_at: datetime | None
    ) -> None:
        values: dict[str, Any] = {
            "agent_id": status.agent_id,
            "state": status.state,
            "reason": status.reason,
            "last_status": status.model_dump(mode="json", by_alias=True),
            "heartbeat_s": status.heartbeat_s,
            "last_seen": seen_at,
        }
        update = dict(values)
        del update["agent_id"]
        if seen_at is None:
            del update["last_seen"]  # offline: keep when it was last seen online
        statement = self._insert(AGENTS).values(values)
        conn.execute(statement.on_conflict_do_update(index_elements=["agent_id"], set_=update))


def _kept_before(conn: Connection, row: dict[str, Any]) -> bool:
    """Whether a retained message's dead letter is already stored (by an earlier run)."""
    same = select(DEAD_LETTERS.c.id).where(
        DEAD_LETTERS.c.topic == row["topic"],
        DEAD_LETTERS.c.payload_size == row["payload_size"],
        DEAD_LETTERS.c.payload == row["payload"],
    )
    return conn.execute(same.limit(1)).first() is not None


class SqliteWriter(Writer):
    """SQLite: the batch is inserted first under a savepoint; when the database stored every
    row (the usual case) those are the new ones. Otherwise (a redelivery, an id twice in the
    batch) the insert is rolled back to the savepoint, the ids stored already are read, and
    only the others are inserted; either way the rollups get exactly the new events."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine, sqlite.insert)
        self._upsert_rollups = [
            (level, rollups.rollup_upsert(level, "sqlite")) for level in rollups.LEVELS
        ]

    def prepare(self, work: Work) -> None:
        """The driver's rows and the rollup rows, as if every event were new (they usually
        are: otherwise the writer computes them again for the new ones)."""
        if work.events:
            work.prepared = _SqliteBatch(
                _sqlite_rows(work.events), rollups.rollup_rows(work.events)
            )

    def _store_events(self, conn: Connection, work: Work) -> int:
        # Take the write lock before reading, so no other writer can store one of these ids
        # between the read and the insert (pysqlite would begin only at the insert).
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        events = work.events
        prepared = work.prepared
        if not isinstance(prepared, _SqliteBatch):
            prepared = _SqliteBatch(_sqlite_rows(events), None)
        rows = prepared.rows
        fresh = events
        driver = conn.connection.driver_connection
        try:
            driver.execute("SAVEPOINT ingest_events")  # type: ignore[union-attr]
            if driver.executemany(_SQLITE_INSERT, rows).rowcount != len(rows):  # type: ignore[union-attr]
                driver.execute("ROLLBACK TO ingest_events")  # type: ignore[union-attr]
                fresh, rows = _unseen(conn, events, rows)
                if rows:
                    driver.executemany(_SQLITE_INSERT, rows)  # type: ignore[union-attr]
            driver.execute("RELEASE ingest_events")  # type: ignore[union-attr]
        except conn.dialect.loaded_dbapi.Error as exc:
            # Wrapped as SQLAlchemy would: the store tells an outage (retry) from refused data.
            raise DBAPIError.instance(
                _SQLITE_INSERT, None, exc, conn.dialect.loaded_dbapi.Error
            ) from exc
        if fresh:
            levels = prepared.levels if fresh is events else None
            if levels is None:
                levels = rollups.rollup_rows(fresh)
            for level, upsert in self._upsert_rollups:
                conn.execute(upsert, levels[level])
        return len(fresh)


class _SqliteBatch(NamedTuple):
    """A batch's rows for the driver, and its rollup rows if computed ahead."""

    rows: list[tuple[Any, ...]]
    levels: dict[rollups.Level, list[dict[str, Any]]] | None


_SQLITE_INSERT = (
    f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) "  # noqa: S608 (constants only)
    f"VALUES ({', '.join('?' * len(EVENT_COLUMNS))}) ON CONFLICT (id) DO NOTHING"
)


def _sqlite_rows(events: list[EventValues]) -> list[tuple[Any, ...]]:
    """The rows for the driver's executemany, bound as ``UtcDateTime`` stores times (without
    SQLAlchemy's per-row parameter processing: two thirds of the insert's time)."""
    received: dict[datetime, str | None] = {}  # one per message: its events share it
    rows = []
    for event in events:
        at = event.received_at
        text = received[at] if at in received else received.setdefault(at, sqlite_utc_text(at))
        rows.append((*event[:7], sqlite_utc_text(event.ts), *event[8:13], text))
    return rows


def _unseen(
    conn: Connection, events: list[EventValues], rows: list[tuple[Any, ...]]
) -> tuple[list[EventValues], list[tuple[Any, ...]]]:
    """The events (and their rows) not stored yet, each id once."""
    ids = [event.id for event in events]
    seen: set[str] = set()
    for start in range(0, len(ids), SQLITE_IDS_PER_QUERY):
        chunk = ids[start : start + SQLITE_IDS_PER_QUERY]
        seen.update(conn.scalars(select(EVENTS.c.id).where(EVENTS.c.id.in_(chunk))))
    fresh, fresh_rows = [], []
    for event, row in zip(events, rows, strict=True):
        if event.id not in seen:
            seen.add(event.id)  # the same id twice in one batch is stored once
            fresh.append(event)
            fresh_rows.append(row)
    return fresh, fresh_rows


class PostgresWriter(Writer):
    """PostgreSQL: a binary COPY of the batch straight into ``events`` under a savepoint, then
    its rollup rows (computed on the parser thread) upserted. When an id is stored already the
    COPY fails whole: back to the savepoint, the batch is COPYed into a staging table and one
    INSERT ... SELECT ... ON CONFLICT adds only the new events, and those to every rollup level
    (``rollups.POSTGRES_INSERT``). The straight COPY writes each event once instead of twice
    and needs no sort nor anti-join: issue 15 measured the difference."""

    parse_ahead = True

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine, postgresql.insert)
        self._upsert_rollups = [
            (level, rollups.rollup_upsert(level, "postgresql")) for level in rollups.LEVELS
        ]

    def prepare(self, work: Work) -> None:
        """Sort the batch by id (concurrent ingest transactions then take the events' index
        locks in one order, as ``POSTGRES_INSERT``'s ORDER BY id does) and compute its rollup
        rows, as if every event were new."""
        if work.events:
            work.events.sort()
            work.prepared = rollups.rollup_rows(work.events)

    def _store_events(self, conn: Connection, work: Work) -> int:
        # psycopg formats COPY rows in C, several times faster than binding the batch as
        # parameters.
        try:
            if _copy_new_events(conn, work.events):
                levels = work.prepared
                if not isinstance(levels, dict):  # not prepared (the store's one-message path)
                    work.events.sort()
                    levels = rollups.rollup_rows(work.events)
                for level, upsert in self._upsert_rollups:
                    conn.execute(upsert, levels[level])
                return len(work.events)
            return _copy_events(conn, work.events)
        except conn.dialect.loaded_dbapi.Error as exc:
            # Raised past SQLAlchemy: wrap it as SQLAlchemy would, so that the store tells a
            # database outage (retry) from data it refuses (isolate the message).
            raise DBAPIError.instance(
                rollups.POSTGRES_INSERT, None, exc, conn.dialect.loaded_dbapi.Error
            ) from exc


def _copy_new_events(conn: Connection, events: list[EventValues]) -> bool:
    """COPY ``events`` into ``events`` if none is stored yet (True); otherwise leave the
    transaction as it was (False)."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor:
        set_json_dumps(_json_as_is, context=cursor)  # attributes are JSON text already
        cursor.execute("SAVEPOINT ingest_events")
        try:
            with cursor.copy(rollups.POSTGRES_COPY_EVENTS) as copy:
                copy.set_types(rollups.EVENT_TYPES)
                write = copy.write_row
                for event in events:
                    write(event)
        except UniqueViolation:
            cursor.execute("ROLLBACK TO SAVEPOINT ingest_events")
            return False
        cursor.execute("RELEASE SAVEPOINT ingest_events")
        return True


def _json_as_is(text: str) -> str:
    return text


def _copy_events(conn: Connection, events: list[EventValues]) -> int:
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor:
        cursor.execute(rollups.POSTGRES_SORT_MEMORY)
        cursor.execute(rollups.POSTGRES_STAGING)
        with cursor.copy(rollups.POSTGRES_COPY) as copy:
            copy.set_types(rollups.STAGING_TYPES)
            write = copy.write_row
            for event in events:  # already in column order, attributes already JSON text
                write(event)
        cursor.execute(rollups.POSTGRES_INSERT)
        return int(cursor.fetchone()[0])


WRITERS: dict[str, Callable[[Engine], Writer]] = {
    "sqlite": SqliteWriter,
    "postgresql": PostgresWriter,
}
"""The writer of each database ingest supports, by SQLAlchemy dialect name."""


def writer_for(engine: Engine) -> Writer:
    """The writer for ``engine``'s database; ConfigError if ingest does not support it."""
    make = WRITERS.get(engine.dialect.name)
    if make is None:
        raise ConfigError(f"ingest supports SQLite and PostgreSQL, not {engine.dialect.name!r}")
    return make(engine)
