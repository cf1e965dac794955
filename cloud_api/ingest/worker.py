"""MQTT -> SQL ingest: at-least-once from the broker, exactly-once in effect in the database.

paho's network thread only enqueues what arrives. A writer thread drains up to ``batch_max``
messages (or what came within ``flush_s``), validates them, and stores the whole batch in ONE
transaction: events with ``INSERT ... ON CONFLICT (id) DO NOTHING`` (so redelivery inserts
nothing) and the ones really inserted added to the hourly rollups (``rollups.py``), pipeline
summaries likewise on their window ``(agent_id, pipeline, window_start)``,
statuses as upserts of ``agents``, and anything invalid as a ``dead_letters`` row
with the reason. Only after that commit are the messages acknowledged to the broker
(``manual_ack``; the session is persistent, so whatever was not acknowledged is redelivered
after a restart) and to each agent, on its ``acks`` topic: the batch ids committed
(``stored``, resends included) and dead-lettered (``rejected``). That ack, not the broker's
PUBACK, is what lets an agent delete a batch from its outbox (DESIGN §3).

One bad message never takes its neighbours with it: a batch the database refuses is split in
halves, and the halves again, until the message it refuses stands alone; that one becomes a
dead letter with the database's reason, and everything else is stored and acknowledged. A
retained message that is a dead letter is kept once, not again at every reconnect.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import ValidationError
from pydantic_core import to_json
from sqlalchemy import Connection, Engine, Insert, Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from cloud_api.analytics import rollups
from cloud_api.config import parse_mqtt_url
from cloud_api.mqtt import make_client
from cloud_api.tables import AGENTS, DEAD_LETTERS, EVENTS, SUMMARIES
from shared.digests import sha256_bytes
from shared.errors import ConfigError, ContractError
from shared.messages import (
    MAX_EVENTS_PER_BATCH,
    Acks,
    AgentStatus,
    BatchAck,
    Event,
    EventBatch,
    PipelineSummary,
    encode,
)
from shared.topics import Channel, Topic, subscription

log = logging.getLogger(__name__)

_Uplink = TypeVar("_Uplink", EventBatch, PipelineSummary, AgentStatus)
"""What agents send that ingest stores: each names its agent, which must be the topic's."""

SUMMARY_KEY = ["agent_id", "pipeline", "window_start"]

PAYLOAD_KEEP_BYTES = 64 * 1024
SQLITE_IDS_PER_QUERY = 500
"""Event ids looked up per query (SQLite limits bound parameters)."""
REASON_MAX_CHARS = 4000
TOPIC_MAX_CHARS = 512
MAX_ERRORS_IN_REASON = 5
RETRY_MAX_S = 5.0
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
"""A larger message is a dead letter before it is parsed. The largest batch an agent sends
(1000 events of the default outbox) is well under 1 MiB; the contract's theoretical maximum
(every field at its bound) is ~63 MB and no agent sends it. Brokers should cap messages too
(Mosquitto's ``message_size_limit``)."""
RETAINED_DEAD_KEPT = 10_000
"""Retained dead letters remembered in memory, so the broker's replay is not kept again."""


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


_Stored = tuple[BatchStats, list[tuple[str, "BatchAck"]]]
"""What storing a batch did, and the acks to publish for it."""


class _Inbound(NamedTuple):
    topic: str
    payload: bytes | bytearray
    mid: int
    qos: int
    retain: bool
    received_at: float
    connection: int  # which broker connection delivered it: a mid is only valid on that one


@dataclass(slots=True)
class _Work:
    """A batch after validation, ready for one transaction, and the acks it earns."""

    events: list[dict[str, Any]] = field(default_factory=list)
    summaries: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[tuple[AgentStatus, datetime | None]] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)
    acks: list[tuple[str, BatchAck]] = field(default_factory=list)
    """(agent id, ack) to publish once the transaction has committed."""
    retained_dead: list[tuple[str, str]] = field(default_factory=list)
    """(topic, payload sha256) of retained dead letters, remembered once committed."""


_BATCH_ID = re.compile(rb'"batch_id"\s*:\s*"([0-9a-f-]{36})"')


UpsertInsert = sqlite.Insert | postgresql.Insert


def _dialect_insert(engine: Engine) -> Callable[[Table], UpsertInsert]:
    """The dialect's INSERT, which knows ON CONFLICT (Core's generic one does not)."""
    name = engine.dialect.name
    if name == "sqlite":
        return sqlite.insert
    if name == "postgresql":
        return postgresql.insert
    raise ConfigError(f"ingest supports SQLite and PostgreSQL, not {name!r}")


def _is_transient(exc: Exception) -> bool:
    """A failure of the database itself (retry the batch), not of the data (isolate it)."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def _reason(exc: ValidationError) -> str:
    """pydantic's error text, compact: the first few errors with their location."""
    errors = exc.errors(include_url=False, include_input=False)
    parts = [
        f"{'.'.join(str(p) for p in error['loc']) or '<root>'}: {error['msg']}"
        for error in errors[:MAX_ERRORS_IN_REASON]
    ]
    more = len(errors) - MAX_ERRORS_IN_REASON
    suffix = f"; and {more} more" if more > 0 else ""
    return f"{len(errors)} validation error(s) for {exc.title}: " + "; ".join(parts) + suffix


class IngestWorker:
    """Subscribes to every agent's ``events``, ``summary`` and ``status``; stores them in SQL."""

    def __init__(
        self,
        *,
        engine: Engine,
        mqtt_url: str,
        protocol: str = "5",
        client_id: str,
        share_group: str | None = None,
        batch_max: int = 200,
        flush_s: float = 0.05,
        session_expiry_s: int = 7 * 24 * 3600,
        observer: Callable[[BatchStats], None] | None = None,
    ) -> None:
        if protocol not in {"5", "3.1.1"}:
            raise ConfigError(f"MQTT protocol must be '5' or '3.1.1', not {protocol!r}")
        if share_group is not None and protocol != "5":
            raise ConfigError(
                f"share group {share_group!r} needs MQTT 5: shared subscriptions do not exist "
                "in MQTT 3.1.1"
            )
        if batch_max < 1:
            raise ConfigError(f"batch_max must be at least 1, not {batch_max}")
        if flush_s <= 0:
            raise ConfigError(f"flush_s must be positive, not {flush_s}")
        broker = parse_mqtt_url(mqtt_url)
        self._host, self._port = broker.host, broker.port
        self._engine = engine
        self._insert = _dialect_insert(engine)
        self._batch_max = batch_max
        self._flush_s = flush_s
        self._observer = observer
        try:
            events_filter = subscription(Channel.EVENTS, share_group=share_group)
            summary_filter = subscription(Channel.SUMMARY, share_group=share_group)
        except ContractError as exc:
            raise ConfigError(str(exc)) from None
        # Status stays a plain subscription: retained messages (the last status of every
        # agent) are not delivered on shared subscriptions, and upserting it twice is harmless.
        self._filters = [
            (events_filter, 1),
            (summary_filter, 1),
            (subscription(Channel.STATUS), 1),
        ]
        self._postgres = engine.dialect.name == "postgresql"
        # SQLite (PostgreSQL stages events by COPY, see _copy_events): the events not stored
        # yet are found under the write lock first, so the insert is a plain executemany.
        self._insert_events: Insert = self._insert(EVENTS).on_conflict_do_nothing(
            index_elements=["id"]
        )
        self._upsert_rollups = [(level, rollups.sqlite_upsert(level)) for level in rollups.LEVELS]
        # psycopg's executemany reports no row count, so PostgreSQL counts new rows by
        # RETURNING (SQLAlchemy then sends multi-row VALUES, which is faster there anyway).
        insert_summaries: Insert = self._insert(SUMMARIES).on_conflict_do_nothing(
            index_elements=SUMMARY_KEY
        )
        if self._postgres:
            insert_summaries = insert_summaries.returning(SUMMARIES.c.id)
        self._insert_summaries = insert_summaries

        self._v5 = protocol == "5"
        self._client = make_client(
            broker, client_id=client_id, protocol=protocol, persistent_session=True, manual_ack=True
        )
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._session_expiry_s = session_expiry_s

        self._queue: queue.SimpleQueue[_Inbound] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None
        self._ack_lock = threading.Lock()
        self._connection = 0
        self._connected = threading.Event()
        self._refused_logged = False
        self._progress = threading.Condition()
        self._received = 0
        self._done = 0
        self._totals = BatchStats()
        self._acks_sent = 0
        self._retained_dead: dict[tuple[str, str], None] = {}

    # -- public surface ------------------------------------------------------------------

    @property
    def messages(self) -> int:
        """Messages handled (stored, dead-lettered or ignored) and committed."""
        return self._totals.messages

    @property
    def events_stored(self) -> int:
        """Events inserted for the first time."""
        return self._totals.events_stored

    @property
    def duplicates(self) -> int:
        """Events that were already stored (redelivery or a republished batch)."""
        return self._totals.duplicates

    @property
    def summaries_stored(self) -> int:
        """Pipeline summaries inserted for the first time."""
        return self._totals.summaries_stored

    @property
    def summary_duplicates(self) -> int:
        """Summaries that were already stored (redelivery)."""
        return self._totals.summary_duplicates

    @property
    def dead_letters(self) -> int:
        """Messages stored in ``dead_letters`` instead of being applied."""
        return self._totals.dead_letters

    @property
    def acks_sent(self) -> int:
        """Batch acks published to agents (stored and rejected)."""
        return self._acks_sent

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up and our subscriptions are in place."""
        return self._connected.is_set()

    def start(self) -> None:
        """Connect (retrying in the background until the broker answers) and start writing."""
        if self._writer is not None:
            raise RuntimeError("IngestWorker.start() called twice")
        self._writer = threading.Thread(target=self._run_writer, name="ingest-writer", daemon=True)
        self._writer.start()
        properties = None
        if self._v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            # The broker keeps our subscriptions and queues messages while ingest is down.
            properties.SessionExpiryInterval = self._session_expiry_s
        self._client.connect_async(
            self._host,
            self._port,
            keepalive=30,
            clean_start=False if self._v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
        )
        self._client.loop_start()

    def stop(self) -> None:
        """Finish the batch in hand, then disconnect; unacknowledged messages stay queued."""
        self._stop.set()
        if self._writer is not None:
            self._writer.join()
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()

    def wait_connected(self, timeout: float = 10.0) -> None:
        """Block until subscribed to the broker; TimeoutError otherwise."""
        if not self._connected.wait(timeout):
            raise TimeoutError(f"ingest not connected to {self._host}:{self._port} in {timeout} s")

    def wait_processed(self, messages: int, timeout: float = 10.0) -> None:
        """Block until at least ``messages`` messages are committed; TimeoutError otherwise."""
        with self._progress:
            if not self._progress.wait_for(lambda: self._done >= messages, timeout):
                raise TimeoutError(f"ingest handled {self._done} of {messages} messages")

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Block until everything received so far is committed; TimeoutError otherwise."""
        with self._progress:
            if not self._progress.wait_for(lambda: self._done >= self._received, timeout):
                raise TimeoutError(f"ingest still busy: {self._done} of {self._received} done")

    # -- network thread ------------------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, flags: Any, reason: Any, _props: Any
    ) -> None:
        if reason.is_failure:
            if not self._refused_logged:
                log.error("broker %s:%s refused ingest: %s", self._host, self._port, reason)
                self._refused_logged = True
            return
        self._refused_logged = False
        client.subscribe(self._filters)
        log.info(
            "ingest connected to %s:%s (session present: %s)",
            self._host,
            self._port,
            flags.session_present,
        )

    def _on_subscribe(
        self, _client: mqtt.Client, _userdata: Any, _mid: int, reasons: list[Any], _props: Any
    ) -> None:
        refused = [str(reason) for reason in reasons if reason.is_failure]
        if refused:
            log.error("broker refused ingest's subscriptions %s: %s", self._filters, refused)
            return
        # Ready only now: a message published before the SUBACK could miss the subscription.
        self._connected.set()

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        with self._ack_lock:
            # Message ids of this connection mean nothing on the next one: never ack them there.
            self._connection += 1
        if self._connected.is_set():
            self._connected.clear()
            if not self._stop.is_set():
                log.warning("ingest lost the broker (%s); reconnecting", reason)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._received += 1
        self._queue.put(
            _Inbound(
                msg.topic,
                msg.payload,
                msg.mid,
                msg.qos,
                msg.retain,
                time.time(),
                self._connection,
            )
        )

    # -- writer thread -------------------------------------------------------------------

    def _run_writer(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            batch = self._collect(first)
            stored = self._store(batch)
            if stored is None:  # stopping while the database is down: leave it to redelivery
                return
            stats, acks = stored
            self._ack(batch)
            self._publish_acks(acks)
            self._finish(len(batch), stats)

    def _collect(self, first: _Inbound) -> list[_Inbound]:
        batch = [first]
        deadline = time.monotonic() + self._flush_s
        get = self._queue.get
        while len(batch) < self._batch_max:
            try:
                batch.append(get(block=False))
                continue
            except queue.Empty:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(get(timeout=remaining))
            except queue.Empty:
                break
        return batch

    def _ack(self, batch: Iterable[_Inbound]) -> None:
        with self._ack_lock:
            current = self._connection
            for message in batch:
                if message.qos > 0 and message.connection == current:
                    self._client.ack(message.mid, message.qos)

    def _finish(self, count: int, stats: BatchStats) -> None:
        with self._progress:
            self._totals += stats
            self._done += count
            self._progress.notify_all()
        if self._observer is not None:
            try:
                self._observer(stats)
            except Exception:
                log.exception("ingest observer failed")

    def _store(self, batch: list[_Inbound]) -> _Stored | None:
        """Commit the batch, isolating what the database refuses; None if stopped while the
        database was unavailable."""
        work = self._parse(batch)
        try:
            stats = self._commit_retrying(work, len(batch))
        except Exception as exc:  # data the database refuses, or a bug: find the culprit
            if len(batch) == 1:
                reason = f"database refused it: {_first_line(exc)}"
                log.warning("dead-lettered a message on %s: %s", batch[0].topic, reason)
                return self._store_dead(batch[0], reason)
            half = len(batch) // 2
            first = self._store(batch[:half])
            second = self._store(batch[half:]) if first is not None else None
            if first is None or second is None:
                return None
            return first[0] + second[0], first[1] + second[1]
        if stats is None:
            return None
        self._remember_retained_dead(work)
        return stats, work.acks

    def _store_dead(self, message: _Inbound, reason: str) -> _Stored | None:
        work = _Work()
        self._dead(work, message, reason)
        try:
            stats = self._commit_retrying(work, 1)
        except Exception:  # a dead letter is built to be storable: this is a bug
            log.exception("cannot store a dead letter for %s; dropping it", message.topic)
            return BatchStats(messages=1), []
        if stats is None:
            return None
        self._remember_retained_dead(work)
        return stats, work.acks

    def _commit_retrying(self, work: _Work, messages: int) -> BatchStats | None:
        """Commit, waiting out database outages (None if stopped meanwhile). Data errors raise."""
        delay = 0.1
        failing = False
        while True:
            try:
                stats = self._commit(work, messages)
            except Exception as exc:
                if not _is_transient(exc):
                    raise
                if not failing:
                    log.error("ingest cannot write to the database: %s; retrying", exc)
                    failing = True
                if self._stop.wait(delay):
                    return None
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            if failing:
                log.info("ingest writes to the database again")
            return stats

    def _publish_acks(self, acks: list[tuple[str, BatchAck]]) -> None:
        """Tell each agent which of its batches are settled (QoS 1, after the commit)."""
        by_agent: dict[str, list[BatchAck]] = {}
        for agent_id, ack in acks:
            by_agent.setdefault(agent_id, []).append(ack)
        for agent_id, settled in by_agent.items():
            topic = str(Topic(agent_id, Channel.ACKS))
            for start in range(0, len(settled), MAX_EVENTS_PER_BATCH):
                message = Acks(
                    agent_id=agent_id, acks=settled[start : start + MAX_EVENTS_PER_BATCH]
                )
                # Lost (broker down): the agent sends the batch again and gets a new ack.
                self._client.publish(topic, encode(message), qos=1)
                self._acks_sent += len(message.acks)

    def _parse(self, batch: list[_Inbound]) -> _Work:
        work = _Work()
        for message in batch:
            try:
                self._parse_one(message, work)
            except Exception as exc:  # a message we cannot even turn into rows
                log.exception("ingest failed on a message on %s", message.topic)
                self._dead(work, message, f"ingest could not read it: {_first_line(exc)}")
        return work

    def _parse_one(self, message: _Inbound, work: _Work) -> None:
        if len(message.payload) > MAX_PAYLOAD_BYTES:
            reason = f"payload of {len(message.payload)} bytes is over {MAX_PAYLOAD_BYTES}"
            self._dead(work, message, reason)
            return
        try:
            topic = Topic.parse(message.topic)
        except ContractError as exc:
            self._dead(work, message, str(exc))
            return
        if topic.channel is Channel.EVENTS:
            parsed = self._validated(message, topic, EventBatch, work)
            if parsed is None:
                return
            agent_id = parsed.agent_id
            received_at = datetime.fromtimestamp(message.received_at, UTC)
            work.events.extend(_event_row(agent_id, event, received_at) for event in parsed.events)
            if parsed.batch_id is not None:
                work.acks.append((agent_id, BatchAck(batch_id=parsed.batch_id, outcome="stored")))
        elif topic.channel is Channel.SUMMARY:
            summary = self._validated(message, topic, PipelineSummary, work)
            if summary is None:
                return
            work.summaries.append(_summary_row(summary, message.received_at))
            if summary.batch_id is not None:
                ack = BatchAck(batch_id=summary.batch_id, outcome="stored")
                work.acks.append((summary.agent_id, ack))
        elif topic.channel is Channel.STATUS:
            if not message.payload:  # an operator cleared the retained status
                return
            status = self._validated(message, topic, AgentStatus, work)
            if status is None:
                return
            work.statuses.append((status, self._seen_at(status, message)))
        else:
            self._dead(work, message, f"ingest does not handle {topic.channel}")

    def _validated(
        self, message: _Inbound, topic: Topic, kind: type[_Uplink], work: _Work
    ) -> _Uplink | None:
        """The payload as ``kind`` if it validates and names the topic's agent; otherwise None,
        and the message is a dead letter with the reason."""
        try:
            parsed = kind.model_validate_json(message.payload)
        except ValidationError as exc:
            self._dead(work, message, _reason(exc))
            return None
        if parsed.agent_id != topic.agent_id:
            reason = f"agent_id {parsed.agent_id!r} does not match topic {message.topic!r}"
            self._dead(work, message, reason)
            return None
        return parsed

    def _dead(self, work: _Work, message: _Inbound, reason: str) -> None:
        """Make ``message`` a dead letter of ``work``; if its agent can be told (a batch id
        on an agent's events or summary topic), reject the batch so it stops resending it.

        A retained message already kept as a dead letter (the broker replays it at every
        subscribe) is not kept again.
        """
        reason = storable(reason)  # it may quote the payload: NUL, lone surrogates...
        if message.retain:
            key = (message.topic, sha256_bytes(message.payload))
            if key in self._retained_dead:
                return
            work.retained_dead.append(key)
        work.dead.append(self._dead_row(message, reason))
        match = _BATCH_ID.search(message.payload[:PAYLOAD_KEEP_BYTES])
        if match is None:
            return
        try:
            topic = Topic.parse(message.topic)
        except ContractError:
            return
        if topic.channel in (Channel.EVENTS, Channel.SUMMARY):
            ack = BatchAck(
                batch_id=match.group(1).decode(), outcome="rejected", reason=reason[:512]
            )
            work.acks.append((topic.agent_id, ack))

    def _remember_retained_dead(self, work: _Work) -> None:
        for key in work.retained_dead:
            if len(self._retained_dead) >= RETAINED_DEAD_KEPT:
                self._retained_dead.pop(next(iter(self._retained_dead)))
            self._retained_dead[key] = None

    @staticmethod
    def _seen_at(status: AgentStatus, message: _Inbound) -> datetime | None:
        """When the agent was last known online.

        A live heartbeat proves the agent is up now, whatever its clock says; a retained one
        (replayed by the broker when we subscribe) is only as fresh as its own timestamp, and
        never fresher than its arrival (a clock set to 9999 must not keep it online forever).
        """
        if status.state != "online":
            return None
        received = datetime.fromtimestamp(message.received_at, UTC)
        if message.retain:
            return min(status.ts, received)
        return received

    @staticmethod
    def _dead_row(message: _Inbound, reason: str) -> dict[str, Any]:
        payload = message.payload[:PAYLOAD_KEEP_BYTES].decode("utf-8", errors="replace")
        return {
            "topic": storable(message.topic[:TOPIC_MAX_CHARS]),
            # PostgreSQL text cannot hold NUL: a dead letter must always be storable.
            "payload": payload.replace("\x00", "\ufffd"),
            "payload_size": len(message.payload),
            "reason": storable(reason[:REASON_MAX_CHARS]),
            "received_at": datetime.fromtimestamp(message.received_at, UTC),
            "retained": message.retain,
        }

    def _commit(self, work: _Work, messages: int) -> BatchStats:
        stored = summaries = 0
        with self._engine.begin() as conn:
            if work.events:
                stored = self._store_events(conn, work.events)
            if work.summaries:
                result = conn.execute(self._insert_summaries, work.summaries)
                summaries = len(result.all()) if self._postgres else result.rowcount
            for status, seen_at in work.statuses:
                self._upsert_agent(conn, status, seen_at)
            dead = [
                {key: value for key, value in row.items() if key != "retained"}
                for row in work.dead
                if not (row["retained"] and self._kept_before(conn, row))
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

    def _store_events(self, conn: Connection, events: list[dict[str, Any]]) -> int:
        """Insert the events not stored yet and add them to the rollups; how many were new."""
        if self._postgres:
            # Binary COPY into a staging table, then one INSERT ... SELECT: psycopg formats
            # COPY rows in C, several times faster than binding the batch as parameters.
            try:
                return self._copy_events(conn, events)
            except conn.dialect.loaded_dbapi.Error as exc:
                # Raised past SQLAlchemy: wrap it as SQLAlchemy would, so that _store tells a
                # database outage (retry) from data it refuses (isolate the message).
                raise DBAPIError.instance(
                    rollups.POSTGRES_INSERT, None, exc, conn.dialect.loaded_dbapi.Error
                ) from exc
        # SQLite: take the write lock before reading, so no other writer can store one of
        # these ids between the read and the insert (pysqlite would begin only at the insert).
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        ids = [event["id"] for event in events]
        seen: set[str] = set()
        for start in range(0, len(ids), SQLITE_IDS_PER_QUERY):
            chunk = ids[start : start + SQLITE_IDS_PER_QUERY]
            seen.update(conn.scalars(select(EVENTS.c.id).where(EVENTS.c.id.in_(chunk))))
        fresh = []
        for event in events:
            if event["id"] not in seen:
                seen.add(event["id"])  # the same id twice in one batch is stored once
                fresh.append(event)
        if fresh:
            conn.execute(self._insert_events, fresh)
            rows = rollups.rollup_rows(fresh)
            for level, upsert in self._upsert_rollups:
                conn.execute(upsert, rows[level])
        return len(fresh)

    @staticmethod
    def _kept_before(conn: Connection, row: dict[str, Any]) -> bool:
        """Whether a retained message's dead letter is already stored (by an earlier run)."""
        same = select(DEAD_LETTERS.c.id).where(
            DEAD_LETTERS.c.topic == row["topic"],
            DEAD_LETTERS.c.payload_size == row["payload_size"],
            DEAD_LETTERS.c.payload == row["payload"],
        )
        return conn.execute(same.limit(1)).first() is not None

    @staticmethod
    def _copy_events(conn: Connection, events: list[dict[str, Any]]) -> int:
        columns = rollups.EVENT_COLUMNS
        attributes = columns.index("attributes")
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor:
            cursor.execute(rollups.POSTGRES_STAGING)
            with cursor.copy(rollups.POSTGRES_COPY) as copy:
                copy.set_types(rollups.STAGING_TYPES)
                for event in events:
                    row = [event[name] for name in columns]
                    row[attributes] = to_json(row[attributes]).decode()  # jsonb from text
                    copy.write_row(row)
            cursor.execute(rollups.POSTGRES_INSERT)
            return int(cursor.fetchone()[0])

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


def _event_row(agent_id: str, event: Event, received_at: datetime) -> dict[str, Any]:
    model = event.model
    return {
        "id": event.id,
        "agent_id": agent_id,
        "pipeline": event.pipeline,
        "kind": event.kind,
        "state": event.state,
        "label": event.label,
        "score": event.score,
        "ts": event.ts,
        "seq": event.seq,
        "model_name": model.name,
        "model_version": model.version,
        "model_sha256": model.sha256,
        "attributes": event.attributes,
        "received_at": received_at,
    }


def storable(text: str) -> str:
    """``text`` as every database and the wire accept it: NUL and unpaired surrogates (which
    PostgreSQL's UTF-8 and the contract refuse) become U+FFFD."""
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")


def _first_line(exc: BaseException) -> str:
    """The database's (or the exception's) own first line of explanation."""
    text = str(getattr(exc, "orig", None) or exc) or type(exc).__name__
    return text.splitlines()[0][:REASON_MAX_CHARS]


def _summary_row(summary: PipelineSummary, received_at: float) -> dict[str, Any]:
    return {
        "agent_id": summary.agent_id,
        "pipeline": summary.pipeline,
        "window_start": summary.window_start,
        "window_end": summary.window_end,
        "samples_in": summary.samples_in,
        "inferences": summary.inferences,
        "gated": summary.gated,
        "events": sum(summary.events_by_label.values()),
        "events_by_label": summary.events_by_label,
        "signals": {name: stats.model_dump() for name, stats in summary.signals.items()},
        "raw_bytes": summary.raw_bytes,
        "sent_bytes": summary.sent_bytes,
        "model_name": summary.model.name,
        "model_version": summary.model.version,
        "model_sha256": summary.model.sha256,
        "received_at": datetime.fromtimestamp(received_at, UTC),
    }
