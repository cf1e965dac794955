"""The durable outbox: everything bound for the cloud waits here until the broker has it.

It holds typed payloads: events (published many to an ``EventBatch``) and pipeline summaries
(published one per message). Each row has a ``kind``, an ``item_id`` (the ack key: the
event's own id, or a fresh id for a summary) and the payload's JSON as it goes on the wire.

SQLite in WAL mode: ``put`` commits before it returns, so an event a pipeline handed over
survives kill -9. With ``sync="normal"`` (the default) the commit reaches the OS but is not
fsynced: a power cut may lose the last commits, and each put costs tens of microseconds.
With ``sync="full"`` every put is fsynced and survives power loss too, at the cost of one
disk flush per put (about 1.5 ms on our CI disks). ``next_batch`` leases rows
in order of (priority, arrival) so that a batch in flight is not sent twice by us; a batch
is never mixed: a run of events, or a single summary, so a summary (which has a lower
priority than events) is only handed out when no event is waiting;
``ack`` deletes rows only once the broker acknowledged them (PUBACK); ``release`` gives
a lease back when a publish failed. Leases live in memory: after a restart every row is
sent again, which is the at-least-once delivery the cloud deduplicates (events by id,
summaries by pipeline and window start).

Drop policy, when a bound is exceeded: rows older than ``max_age_s`` are dropped first,
then, while the stored bytes exceed ``max_bytes``, the oldest rows of the lowest priority
(the highest ``priority`` number). Every drop is counted in ``dropped``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from shared.errors import StorageError
from shared.messages import Event, PipelineSummary, encode, new_event_id

PRIORITY_ALERT = 0
"""Alerts (anomaly events) go first."""
PRIORITY_SUMMARY = 10
"""Summaries wait behind every event and are the first to go when the outbox is full."""

PayloadKind = Literal["event", "summary"]

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    rowid_ INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL DEFAULT 'event',
    priority INTEGER NOT NULL,
    created REAL NOT NULL,
    size INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_order ON outbox (priority, rowid_);
CREATE INDEX IF NOT EXISTS outbox_created ON outbox (created);
"""
_UPGRADE_FROM_0 = """
ALTER TABLE outbox RENAME COLUMN event_id TO item_id;
ALTER TABLE outbox ADD COLUMN kind TEXT NOT NULL DEFAULT 'event';
"""
"""Outbox files of the first release held events only: keep them, they are all events."""


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One stored payload: its id (the ack key), its kind and its JSON as it goes on the wire."""

    item_id: str
    kind: PayloadKind
    payload: bytes


class Outbox:
    """A bounded, durable, thread-safe FIFO of events and summaries with priorities."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        max_age_s: float,
        sync: Literal["normal", "full"] = "normal",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._max_bytes = max_bytes
        self._max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._leased: set[str] = set()
        self.dropped = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={sync.upper()}")
            self._create_or_upgrade()
            row = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM outbox").fetchone()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open outbox {path}: {exc}") from exc
        self._bytes: int = row[0]

    def put(self, events: Sequence[Event], *, priority: int = PRIORITY_ALERT) -> int:
        """Store events durably (committed when this returns), applying the bounds.

        Returns the bytes stored: each event's JSON exactly as it will sit in an EventBatch,
        which is what a pipeline counts as sent.
        """
        if not events:
            return 0
        return self._insert([(e.id, "event", encode(e)) for e in events], priority)

    def put_summary(self, summary: PipelineSummary, *, priority: int = PRIORITY_SUMMARY) -> int:
        """Store one summary durably; returns its encoded size (the bytes it costs on the wire)."""
        return self._insert([(new_event_id(), "summary", encode(summary))], priority)

    def next_batch(self, max_events: int) -> list[OutboxItem]:
        """Lease what goes into the next MQTT message, in (priority, arrival) order.

        That is the first item not in flight and, if it is an event, the events right behind
        it, up to ``max_events``; a summary always travels alone.
        """
        with self._lock:
            try:
                with self._db:
                    self._enforce_bounds(self._clock())
                rows = self._db.execute(
                    "SELECT item_id, kind, payload FROM outbox ORDER BY priority, rowid_ LIMIT ?",
                    (max_events + len(self._leased),),
                ).fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"outbox read failed: {exc}") from exc
            batch: list[OutboxItem] = []
            for item_id, kind, payload in rows:
                if item_id in self._leased:
                    continue
                if batch and (kind != batch[0].kind or kind != "event"):
                    break
                batch.append(OutboxItem(item_id, kind, payload))
                if len(batch) == max_events:
                    break
            self._leased.update(item.item_id for item in batch)
            return batch

    def ack(self, item_ids: Iterable[str]) -> None:
        """Delete rows the broker has acknowledged."""
        ids = list(item_ids)
        with self._lock:
            try:
                with self._db:
                    sizes = self._db.execute(
                        "DELETE FROM outbox WHERE item_id IN (SELECT value FROM json_each(?))"
                        " RETURNING size",
                        (json.dumps(ids),),
                    ).fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"outbox ack failed: {exc}") from exc
            self._bytes -= sum(size for (size,) in sizes)
            self._leased.difference_update(ids)

    def release(self, item_ids: Iterable[str]) -> None:
        """Give leases back (the publish failed), so the rows are sent again in order."""
        with self._lock:
            self._leased.difference_update(item_ids)

    def release_all(self) -> None:
        """Forget every lease, e.g. when the MQTT client's own resend queue was lost."""
        with self._lock:
            self._leased.clear()

    def depth(self) -> int:
        """How many items (events and summaries) wait, including those in flight."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def oldest_age_s(self) -> float:
        """Age of the oldest waiting item, 0 when empty."""
        with self._lock:
            oldest = self._db.execute("SELECT MIN(created) FROM outbox").fetchone()[0]
        return 0.0 if oldest is None else max(0.0, self._clock() - oldest)

    @property
    def size_bytes(self) -> int:
        """Bytes of payload stored."""
        return self._bytes

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _create_or_upgrade(self) -> None:
        """Create the table, or bring an outbox file of an older release up to date."""
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > _SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"schema version {version} is newer than this agent's {_SCHEMA_VERSION}"
            )
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}
        upgrade = _UPGRADE_FROM_0 if "event_id" in columns else ""
        # One transaction: a crash half-way leaves the old file, never half of the new one.
        self._db.executescript(
            f"BEGIN; {upgrade} {_SCHEMA} PRAGMA user_version={_SCHEMA_VERSION}; COMMIT;"
        )

    def _insert(self, rows: list[tuple[str, PayloadKind, bytes]], priority: int) -> int:
        now = self._clock()
        added = sum(len(payload) for _, _, payload in rows)
        with self._lock:
            try:
                with self._db:
                    self._db.executemany(
                        "INSERT INTO outbox (item_id, kind, priority, created, size, payload)"
                        " VALUES (?1, ?2, ?3, ?4, length(?5), ?5)",
                        [(item_id, kind, priority, now, p) for item_id, kind, p in rows],
                    )
                    self._bytes += added
                    self._enforce_bounds(now)
            except sqlite3.Error as exc:
                raise StorageError(f"outbox put failed: {exc}") from exc
        return added

    def _enforce_bounds(self, now: float) -> None:
        """Drop expired rows, then the oldest of the lowest priority until under max_bytes.

        Runs inside the caller's transaction and lock.
        """
        expired = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox WHERE created < ?",
            (now - self._max_age_s,),
        ).fetchone()
        if expired[0]:
            self._db.execute("DELETE FROM outbox WHERE created < ?", (now - self._max_age_s,))
            self.dropped += expired[0]
            self._bytes -= expired[1]
        while self._bytes > self._max_bytes:
            victims = self._db.execute(
                "SELECT rowid_, size FROM outbox ORDER BY priority DESC, rowid_ LIMIT 64"
            ).fetchall()
            if not victims:
                self._bytes = 0
                break
            drop: list[tuple[int]] = []
            for rowid, size in victims:
                if self._bytes <= self._max_bytes:
                    break
                drop.append((rowid,))
                self._bytes -= size
            self._db.executemany("DELETE FROM outbox WHERE rowid_ = ?", drop)
            self.dropped += len(drop)
