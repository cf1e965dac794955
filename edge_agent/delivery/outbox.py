"""The durable outbox: everything bound for the cloud waits here until the cloud has it.

It holds typed payloads: events (published many to an ``EventBatch``), pipeline summaries
and escalations (published one per message; an escalation leaves with the cloud's result).
Each row has a ``kind``, an ``item_id`` (the event's own id, the summary's ``batch_id``, the
escalation's id) and the payload's JSON as it goes on the wire.

SQLite in WAL mode: ``put`` commits before it returns, so what it stored survives kill -9
(pipelines hand their events to ``outbox_writer.OutboxWriter``, which stores them here a few
milliseconds later in one transaction for all of them). With ``sync="normal"`` (the
default) the commit reaches the OS but is not fsynced: a power cut may lose the last
commits, and each put costs tens of microseconds. With ``sync="full"`` every put is fsynced
and survives power loss too, at the cost of one disk flush per put (about 1.5 ms on our CI
disks).

Delivery is end to end (DESIGN §3): ``next_batch`` *leases* rows in order of (priority,
arrival), a run of events or a single summary or escalation, so a batch in flight is not
sent twice by us;
a lease lasts until the cloud acknowledges the batch (``ack`` deletes the rows: the ingest
transaction committed, or the cloud dead-lettered it) or until the uplink gives it back
(``release``: no ack within the timeout, a refused publish, a reconnect). The broker's PUBACK
deletes nothing. Leases live in memory: after a restart every row is sent again, which the
cloud deduplicates (events by id, summaries by pipeline and window start).

The same file keeps what must survive a restart beside the events, written in the same
transaction as the events that change it:

* ``sequences``: the next event ``seq`` of each pipeline, so seq is gap-free per agent and
  pipeline for the agent's whole life (``next_seq``);
* ``open_incidents``: the ``start`` event of every incident not ended yet (keyed by
  ``incident_key``), so an agent that died with one open ends it when it comes back
  (``open_incidents``);
* ``answers``: the reconciled event of each answered escalation until its pipeline has
  emitted it. ``take`` stores it in the transaction that deletes the escalation, and ``put``
  deletes it in the transaction that stores it as an event, so a crash between the two
  loses neither and stores it once (``answers``: what a restart emits).

Escalation rows name their pipeline: ``waiting_escalations`` counts them, so a row dropped
for age or size no longer holds a place among the unanswered.

Drop policy, when a bound is exceeded: rows older than ``max_age_s`` are dropped first,
then, while the stored bytes exceed ``max_bytes``, the oldest rows of the lowest priority
(the highest ``priority`` number). Every drop is counted in ``dropped``.

(Over 400 lines: one class, the SQLite file's every statement in one place.)
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from shared.errors import StorageError
from shared.messages import Event, PipelineSummary, encode, new_event_id

PRIORITY_ALERT = 0
"""Alerts (anomaly events) go first."""
PRIORITY_ESCALATION = 5
"""Escalations (``edge_agent.delivery.escalation``) go after events, before summaries."""
PRIORITY_SUMMARY = 10
"""Summaries wait behind every event and are the first to go when the outbox is full."""

RECONCILED_KIND = "escalation"
"""The kind of an escalation's reconciled event (``edge_agent.delivery.escalation``): ``put``
of one deletes it from ``answers``."""

PayloadKind = Literal["event", "summary", "escalation"]

_SCHEMA_VERSION = 4
_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    rowid_ INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL DEFAULT 'event',
    priority INTEGER NOT NULL,
    created REAL NOT NULL,
    size INTEGER NOT NULL,
    payload BLOB NOT NULL,
    leased INTEGER NOT NULL DEFAULT 0,
    pipeline TEXT
);
CREATE INDEX IF NOT EXISTS outbox_order ON outbox (priority, rowid_);
CREATE INDEX IF NOT EXISTS outbox_escalations ON outbox (pipeline) WHERE kind = 'escalation';
CREATE INDEX IF NOT EXISTS outbox_waiting ON outbox (leased, priority, rowid_);
CREATE INDEX IF NOT EXISTS outbox_created ON outbox (created);
CREATE TABLE IF NOT EXISTS sequences (
    pipeline TEXT PRIMARY KEY,
    next_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS open_incidents (
    pipeline TEXT NOT NULL,
    incident TEXT NOT NULL,
    start_event BLOB NOT NULL,
    PRIMARY KEY (pipeline, incident)
);
CREATE TABLE IF NOT EXISTS answers (
    event_id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    created REAL NOT NULL,
    event BLOB NOT NULL
);
"""
_UPGRADE_FROM_3 = """
ALTER TABLE outbox ADD COLUMN pipeline TEXT;
UPDATE outbox SET pipeline = json_extract(CAST(payload AS TEXT), '$.pipeline')
    WHERE kind = 'escalation';
"""
"""Escalation rows name their pipeline in a column (``waiting_escalations`` counts them)."""
_UPGRADE_FROM_1 = "ALTER TABLE outbox ADD COLUMN leased INTEGER NOT NULL DEFAULT 0;"
"""Leases are a column with its own index, so ``next_batch`` reads the next waiting rows
directly however many are in flight. A lease does not outlive the process: every open
clears them."""
_UPGRADE_FROM_0 = """
ALTER TABLE outbox RENAME COLUMN event_id TO item_id;
ALTER TABLE outbox ADD COLUMN kind TEXT NOT NULL DEFAULT 'event';
"""
"""Outbox files of the first release held events only: keep them, they are all events."""


def incident_key(event: Event) -> str:
    """Which incident an event belongs to within its pipeline: its kind and, for camera
    objects, its track (a sensor pipeline has one incident of a kind open at a time)."""
    return f"{event.kind}:{event.attributes.get('track_id', '')}"


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
        self.dropped = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={sync.upper()}")
            self._create_or_upgrade()
            self._db.execute("UPDATE outbox SET leased = 0 WHERE leased = 1")
            row = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM outbox").fetchone()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open outbox {path}: {exc}") from exc
        self._bytes: int = row[0]

    def put(self, events: Sequence[Event], *, priority: int = PRIORITY_ALERT) -> int:
        """Store events durably (committed when this returns), applying the bounds.

        In the same transaction the pipelines' next ``seq`` moves past these events, and
        ``start``/``end`` events open and close their incidents. Returns the bytes stored:
        each event's JSON exactly as it will sit in an EventBatch, which is what a pipeline
        counts as sent.
        """
        return self.put_groups([events], priority=priority)[0]

    def put_groups(
        self, groups: Sequence[Sequence[Event]], *, priority: int = PRIORITY_ALERT
    ) -> list[int]:
        """``put`` of several groups (of several pipelines) in one transaction, in order;
        the bytes stored of each group (the group commit of ``OutboxWriter``)."""
        events = [event for group in groups for event in group]
        if not events:
            return [0 for _ in groups]
        encoded = [encode(e) for e in events]
        self._insert(
            [(e.id, "event", p) for e, p in zip(events, encoded, strict=True)],
            priority,
            also=lambda: self._keep_track(events, encoded),
        )
        sizes, at = [], 0
        for group in groups:
            sizes.append(sum(len(payload) for payload in encoded[at : at + len(group)]))
            at += len(group)
        return sizes

    def put_summary(self, summary: PipelineSummary, *, priority: int = PRIORITY_SUMMARY) -> int:
        """Store one summary durably under a new ``batch_id`` (what the cloud will ack);
        returns its encoded size (the bytes it costs on the wire)."""
        batch_id = new_event_id()
        payload = encode(summary.model_copy(update={"batch_id": batch_id}))
        return self._insert([(batch_id, "summary", payload)], priority)

    def put_escalation(self, item_id: str, payload: bytes, *, pipeline: str) -> int:
        """Store one encoded escalation of ``pipeline`` under its id; it leaves with the
        cloud's result (``take``)."""
        return self._insert([(item_id, "escalation", payload)], PRIORITY_ESCALATION, pipeline)

    def peek(self, item_id: str) -> bytes | None:
        """One item's payload, left in place (None if it is not here)."""
        with self._lock:
            try:
                row = self._db.execute(
                    "SELECT payload FROM outbox WHERE item_id = ?", (item_id,)
                ).fetchone()
            except sqlite3.Error as exc:
                raise StorageError(f"outbox read failed: {exc}") from exc
        return None if row is None else bytes(row[0])

    def take(self, item_id: str, answer: Event | None = None) -> bytes | None:
        """Delete one item and return its payload (None if it is no longer here). If it was
        here, ``answer`` (an escalation's reconciled event) is stored in the same transaction,
        to wait for its pipeline (``answers``; ``put`` of the event deletes it)."""
        with self._lock:
            try:
                with self._transaction():
                    row = self._db.execute(
                        "DELETE FROM outbox WHERE item_id = ? RETURNING size, payload", (item_id,)
                    ).fetchone()
                    if row is not None and answer is not None:
                        self._db.execute(
                            "INSERT OR IGNORE INTO answers VALUES (?, ?, ?, ?)",
                            (answer.id, answer.pipeline, self._clock(), encode(answer)),
                        )
            except sqlite3.Error as exc:
                raise StorageError(f"outbox take failed: {exc}") from exc
            if row is None:
                return None
            self._bytes -= row[0]
            return bytes(row[1])

    def answers(self, pipeline: str) -> list[Event]:
        """The reconciled events of the pipeline that ``take`` stored and no ``put`` has
        stored as events yet, oldest first (what a restart emits). Raises ValidationError for
        one an agent of another version wrote."""
        with self._lock:
            rows = self._db.execute(
                "SELECT event FROM answers WHERE pipeline = ? ORDER BY created, rowid",
                (pipeline,),
            ).fetchall()
        return [Event.model_validate_json(event) for (event,) in rows]

    def waiting_escalations(self) -> dict[str, int]:
        """Escalations stored and not answered, by pipeline; rows past ``max_age_s`` (which
        the next write drops) are not counted."""
        with self._lock:
            rows = self._db.execute(
                "SELECT pipeline, COUNT(*) FROM outbox WHERE kind = 'escalation'"
                " AND created >= ? GROUP BY pipeline",
                (self._clock() - self._max_age_s,),
            ).fetchall()
        return {str(pipeline): int(count) for pipeline, count in rows}

    def next_seq(self, pipeline: str) -> int:
        """The ``seq`` of the pipeline's next event: one past the last one ever stored."""
        with self._lock:
            row = self._db.execute(
                "SELECT next_seq FROM sequences WHERE pipeline = ?", (pipeline,)
            ).fetchone()
        return 0 if row is None else int(row[0])

    def open_incidents(self, pipeline: str) -> list[Event]:
        """The ``start`` events of the pipeline's incidents that have not ended, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT start_event FROM open_incidents WHERE pipeline = ? ORDER BY rowid",
                (pipeline,),
            ).fetchall()
        return [Event.model_validate_json(payload) for (payload,) in rows]

    def next_batch(self, max_events: int) -> list[OutboxItem]:
        """Lease what goes into the next MQTT message, in (priority, arrival) order.

        That is the first item not in flight and, if it is an event, the events right behind
        it, up to ``max_events``; a summary always travels alone.
        """
        with self._lock:
            try:
                with self._transaction():
                    self._enforce_bounds(self._clock())
                    rows = self._db.execute(
                        "SELECT rowid_, item_id, kind, payload FROM outbox WHERE leased = 0"
                        " ORDER BY priority, rowid_ LIMIT ?",
                        (max_events,),
                    ).fetchall()
                    batch: list[OutboxItem] = []
                    leased: list[tuple[int]] = []
                    for rowid, item_id, kind, payload in rows:
                        if batch and (kind != batch[0].kind or kind != "event"):
                            break
                        batch.append(OutboxItem(item_id, kind, payload))
                        leased.append((rowid,))
                    self._db.executemany("UPDATE outbox SET leased = 1 WHERE rowid_ = ?", leased)
            except sqlite3.Error as exc:
                raise StorageError(f"outbox read failed: {exc}") from exc
            return batch

    def ack(self, item_ids: Iterable[str]) -> int:
        """Delete rows the cloud has acknowledged; returns how many were still here."""
        ids = json.dumps(list(item_ids))
        with self._lock:
            try:
                with self._transaction():
                    sizes = self._db.execute(
                        "DELETE FROM outbox WHERE item_id IN (SELECT value FROM json_each(?))"
                        " RETURNING size",
                        (ids,),
                    ).fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"outbox ack failed: {exc}") from exc
            self._bytes -= sum(size for (size,) in sizes)
            return len(sizes)

    def release(self, item_ids: Iterable[str]) -> None:
        """Give leases back (no ack in time, a refused publish), so the rows go again in order."""
        with self._lock:
            try:
                with self._transaction():
                    self._db.execute(
                        "UPDATE outbox SET leased = 0"
                        " WHERE item_id IN (SELECT value FROM json_each(?))",
                        (json.dumps(list(item_ids)),),
                    )
            except sqlite3.Error as exc:
                raise StorageError(f"outbox release failed: {exc}") from exc

    def release_all(self) -> None:
        """Forget every lease: everything not acknowledged is sent again."""
        with self._lock:
            try:
                with self._transaction():
                    self._db.execute("UPDATE outbox SET leased = 0 WHERE leased = 1")
            except sqlite3.Error as exc:
                raise StorageError(f"outbox release failed: {exc}") from exc

    def leased(self) -> int:
        """How many rows are in flight (published or about to be, not acknowledged)."""
        with self._lock:
            query = "SELECT COUNT(*) FROM outbox WHERE leased = 1"
            return int(self._db.execute(query).fetchone()[0])

    def waiting(self) -> bool:
        """Whether an item waits that is not in flight (the sender has a backlog)."""
        query = "SELECT EXISTS (SELECT 1 FROM outbox WHERE leased = 0)"
        with self._lock:
            return bool(self._db.execute(query).fetchone()[0])

    def depth(self) -> int:
        """How many items wait, including those in flight, and reconciled events no pipeline
        has emitted yet (``answers``: they leave as events)."""
        query = "SELECT (SELECT COUNT(*) FROM outbox) + (SELECT COUNT(*) FROM answers)"
        with self._lock:
            return int(self._db.execute(query).fetchone()[0])

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

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One SQLite transaction (the connection is in autocommit mode: it never opens one by
        itself), so a put, its seq and its incident are stored together or not at all."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _create_or_upgrade(self) -> None:
        """Create the table, or bring an outbox file of an older release up to date."""
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > _SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"schema version {version} is newer than this agent's {_SCHEMA_VERSION}"
            )
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}
        upgrade = _UPGRADE_FROM_0 if "event_id" in columns else ""
        if columns and "leased" not in columns:
            upgrade += _UPGRADE_FROM_1
        if columns and "pipeline" not in columns:
            upgrade += _UPGRADE_FROM_3
        # One transaction: a crash half-way leaves the old file, never half of the new one.
        self._db.executescript(
            f"BEGIN; {upgrade} {_SCHEMA} PRAGMA user_version={_SCHEMA_VERSION}; COMMIT;"
        )

    def _insert(
        self,
        rows: list[tuple[str, PayloadKind, bytes]],
        priority: int,
        pipeline: str | None = None,
        also: Callable[[], None] | None = None,
    ) -> int:
        now = self._clock()
        added = sum(len(payload) for _, _, payload in rows)
        with self._lock:
            try:
                with self._transaction():
                    self._db.executemany(
                        "INSERT INTO outbox"
                        " (item_id, kind, priority, created, size, payload, pipeline)"
                        " VALUES (?1, ?2, ?3, ?4, length(?5), ?5, ?6)",
                        [(i, kind, priority, now, p, pipeline) for i, kind, p in rows],
                    )
                    if also is not None:
                        also()
                    self._bytes += added
                    self._enforce_bounds(now)
            except sqlite3.Error as exc:
                raise StorageError(f"outbox put failed: {exc}") from exc
        return added

    def _keep_track(self, events: Sequence[Event], encoded: list[bytes]) -> None:
        """Move each pipeline's next seq past ``events``, open or close their incidents, and
        delete the answers (``take``) they store.

        Runs inside ``put``'s transaction and lock: an event is stored exactly when its seq
        and its incident are, and a reconciled event leaves ``answers`` as it becomes one.
        """
        next_seq: dict[str, int] = {}
        for event, payload in zip(events, encoded, strict=True):
            next_seq[event.pipeline] = max(next_seq.get(event.pipeline, 0), event.seq + 1)
            if event.state == "start":
                self._db.execute(
                    "INSERT OR REPLACE INTO open_incidents VALUES (?, ?, ?)",
                    (event.pipeline, incident_key(event), payload),
                )
            elif event.state == "end":
                self._db.execute(
                    "DELETE FROM open_incidents WHERE pipeline = ? AND incident = ?",
                    (event.pipeline, incident_key(event)),
                )
        self._db.executemany(
            "INSERT INTO sequences VALUES (?, ?) ON CONFLICT (pipeline)"
            " DO UPDATE SET next_seq = max(next_seq, excluded.next_seq)",
            list(next_seq.items()),
        )
        if answered := [event.id for event in events if event.kind == RECONCILED_KIND]:
            self._db.execute(
                "DELETE FROM answers WHERE event_id IN (SELECT value FROM json_each(?))",
                (json.dumps(answered),),
            )

    def _enforce_bounds(self, now: float) -> None:
        """Drop expired rows (and answers no pipeline emitted in that time: it is gone), then
        the oldest of the lowest priority until under max_bytes.

        Runs inside the caller's transaction and lock.
        """
        cutoff = (now - self._max_age_s,)
        self.dropped += self._db.execute("DELETE FROM answers WHERE created < ?", cutoff).rowcount
        expired = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox WHERE created < ?", cutoff
        ).fetchone()
        if expired[0]:
            self._db.execute("DELETE FROM outbox WHERE created < ?", cutoff)
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
