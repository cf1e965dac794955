"""The durable outbox: every event bound for the cloud waits here until the broker has it.

SQLite in WAL mode: ``put`` commits before it returns, so an event a pipeline handed over
survives kill -9. With ``sync="normal"`` (the default) the commit reaches the OS but is not
fsynced: a power cut may lose the last commits, and each put costs tens of microseconds.
With ``sync="full"`` every put is fsynced and survives power loss too, at the cost of one
disk flush per put (about 1.5 ms on our CI disks). ``next_batch`` leases rows
in order of (priority, arrival) so that a batch in flight is not sent twice by us;
``ack`` deletes rows only once the broker acknowledged them (PUBACK); ``release`` gives
a lease back when a publish failed. Leases live in memory: after a restart every row is
sent again, which is the at-least-once delivery the cloud deduplicates by event id.

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
from shared.messages import Event, encode

PRIORITY_ALERT = 0
"""Alerts (anomaly events) go first; summaries and samples get larger numbers later."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    rowid_ INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    priority INTEGER NOT NULL,
    created REAL NOT NULL,
    size INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_order ON outbox (priority, rowid_);
CREATE INDEX IF NOT EXISTS outbox_created ON outbox (created);
"""


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One stored event: its id (the ack key) and its JSON as it goes on the wire."""

    event_id: str
    payload: bytes


class Outbox:
    """A bounded, durable, thread-safe FIFO of events with priorities."""

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
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM outbox").fetchone()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open outbox {path}: {exc}") from exc
        self._bytes: int = row[0]

    def put(self, events: Sequence[Event], *, priority: int = PRIORITY_ALERT) -> None:
        """Store events durably (committed when this returns), applying the bounds."""
        if not events:
            return
        now = self._clock()
        rows = [(e.id, priority, now, payload) for e in events for payload in (encode(e),)]
        added = sum(len(r[3]) for r in rows)
        with self._lock:
            try:
                with self._db:
                    self._db.executemany(
                        "INSERT INTO outbox (event_id, priority, created, size, payload)"
                        " VALUES (?, ?, ?, length(?4), ?4)",
                        rows,
                    )
                    self._bytes += added
                    self._enforce_bounds(now)
            except sqlite3.Error as exc:
                raise StorageError(f"outbox put failed: {exc}") from exc

    def next_batch(self, max_events: int) -> list[OutboxItem]:
        """Lease up to ``max_events`` rows that are not in flight, in (priority, arrival) order."""
        with self._lock:
            try:
                with self._db:
                    self._enforce_bounds(self._clock())
                rows = self._db.execute(
                    "SELECT event_id, payload FROM outbox ORDER BY priority, rowid_ LIMIT ?",
                    (max_events + len(self._leased),),
                ).fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"outbox read failed: {exc}") from exc
            batch = [OutboxItem(i, p) for i, p in rows if i not in self._leased][:max_events]
            self._leased.update(item.event_id for item in batch)
            return batch

    def ack(self, event_ids: Iterable[str]) -> None:
        """Delete rows the broker has acknowledged."""
        ids = list(event_ids)
        with self._lock:
            try:
                with self._db:
                    sizes = self._db.execute(
                        "DELETE FROM outbox WHERE event_id IN (SELECT value FROM json_each(?))"
                        " RETURNING size",
                        (json.dumps(ids),),
                    ).fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"outbox ack failed: {exc}") from exc
            self._bytes -= sum(size for (size,) in sizes)
            self._leased.difference_update(ids)

    def release(self, event_ids: Iterable[str]) -> None:
        """Give leases back (the publish failed), so the rows are sent again in order."""
        with self._lock:
            self._leased.difference_update(event_ids)

    def release_all(self) -> None:
        """Forget every lease, e.g. when the MQTT client's own resend queue was lost."""
        with self._lock:
            self._leased.clear()

    def depth(self) -> int:
        """How many events wait (including those in flight)."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def oldest_age_s(self) -> float:
        """Age of the oldest waiting event, 0 when empty."""
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
