"""The ingest worker: one MQTT session to the broker, a parser thread and a writer thread.

paho's network thread only enqueues what arrives. The parser thread drains up to
``batch_max`` messages (or what came within ``flush_s``) and parses them (``parse.py``); the
writer thread hands each parsed batch to the batch store (``store.py``: one transaction,
isolation of what the database refuses), and only after that commit acknowledges it to the
broker and to its agents (``acks.py``). On PostgreSQL the next batch is parsed while the
database stores this one (the driver waits without the GIL), at most one batch ahead; on
SQLite the writer thread parses it (``Writer.parse_ahead`` says why).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from sqlalchemy import Engine

from cloud_api.config import parse_mqtt_url
from cloud_api.ingest.acks import Acknowledger
from cloud_api.ingest.parse import Inbound, Work
from cloud_api.ingest.store import BatchStore
from cloud_api.ingest.writers import BatchStats, writer_for
from cloud_api.mqtt import check_protocol, connect_persistent, make_client, worker_filter
from shared.errors import ConfigError
from shared.tls import TlsFiles
from shared.topics import Channel, subscription
from shared.urls import MqttUrl

log = logging.getLogger(__name__)


def _check(protocol: str, share_group: str | None, batch_max: int, flush_s: float) -> None:
    """ConfigError unless the worker's settings make sense together."""
    check_protocol(protocol, share_group)
    if batch_max < 1:
        raise ConfigError(f"batch_max must be at least 1, not {batch_max}")
    if flush_s <= 0:
        raise ConfigError(f"flush_s must be positive, not {flush_s}")


def _filters(share_group: str | None) -> list[tuple[str, int]]:
    """The topic filters ingest subscribes to, each at QoS 1."""
    events_filter = worker_filter(Channel.EVENTS, share_group)
    summary_filter = worker_filter(Channel.SUMMARY, share_group)
    # Status stays a plain subscription: retained messages (the last status of every
    # agent) are not delivered on shared subscriptions, and upserting it twice is harmless.
    return [(events_filter, 1), (summary_filter, 1), (subscription(Channel.STATUS), 1)]


class IngestWorker:
    """Subscribes to every agent's ``events``, ``summary`` and ``status``; stores them in SQL."""

    def __init__(
        self,
        *,
        engine: Engine,
        mqtt_url: str | MqttUrl,
        tls: TlsFiles | None = None,
        protocol: str = "5",
        client_id: str,
        share_group: str | None = None,
        batch_max: int = 200,
        flush_s: float = 0.05,
        session_expiry_s: int = 7 * 24 * 3600,
        observer: Callable[[BatchStats], None] | None = None,
    ) -> None:
        _check(protocol, share_group, batch_max, flush_s)
        broker = parse_mqtt_url(mqtt_url) if isinstance(mqtt_url, str) else mqtt_url
        self._host, self._port = broker.host, broker.port
        self._stop = threading.Event()
        self._store = BatchStore(writer_for(engine), stop=self._stop)
        self._batch_max = batch_max
        self._flush_s = flush_s
        self._observer = observer
        self._filters = _filters(share_group)

        self._v5 = protocol == "5"
        self._client = make_client(
            broker,
            tls=tls,
            client_id=client_id,
            protocol=protocol,
            persistent_session=True,
            manual_ack=True,
        )
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._session_expiry_s = session_expiry_s
        self._acks = Acknowledger(self._client)

        self._queue: queue.SimpleQueue[Inbound] = queue.SimpleQueue()
        self._parsed: queue.Queue[tuple[list[Inbound], Work | None]] = queue.Queue(maxsize=1)
        self._parser: threading.Thread | None = None
        self._writer: threading.Thread | None = None
        self._connected = threading.Event()
        self._refused_logged = False
        self._refusal: str | None = None
        self._progress = threading.Condition()
        self._received = 0
        self._done = 0
        self._totals = BatchStats()

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
        return self._acks.sent

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up and our subscriptions are in place."""
        return self._connected.is_set()

    @property
    def alive(self) -> bool:
        """Whether the writer thread runs (a liveness probe's question)."""
        threads = (self._parser, self._writer)
        return all(thread is not None and thread.is_alive() for thread in threads)

    @property
    def refusal(self) -> str | None:
        """The broker's reason when it refused our last connection (say, bad user name or
        password), None once connected."""
        return self._refusal

    def start(self) -> None:
        """Connect (retrying in the background until the broker answers) and start writing."""
        if self._writer is not None:
            raise RuntimeError("IngestWorker.start() called twice")
        self._parser = threading.Thread(target=self._run_parser, name="ingest-parser", daemon=True)
        self._writer = threading.Thread(target=self._run_writer, name="ingest-writer", daemon=True)
        self._parser.start()
        self._writer.start()
        connect_persistent(
            self._client, self._host, self._port, v5=self._v5,
            session_expiry_s=self._session_expiry_s,
        )  # fmt: skip

    def stop(self) -> None:
        """Finish the batch in hand, then disconnect; unacknowledged messages stay queued."""
        self._stop.set()
        for thread in (self._parser, self._writer):
            if thread is not None:
                thread.join()
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

    # paho's network thread calls the four below.

    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, flags: Any, reason: Any, _props: Any
    ) -> None:
        if reason.is_failure:
            self._refusal = str(reason)
            if not self._refused_logged:
                log.error("broker %s:%s refused ingest: %s", self._host, self._port, reason)
                self._refused_logged = True
            return
        self._refused_logged = False
        self._refusal = None
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
        self._acks.connection_lost()
        if self._connected.is_set():
            self._connected.clear()
            if not self._stop.is_set():
                log.warning("ingest lost the broker (%s); reconnecting", reason)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._received += 1
        self._queue.put(
            Inbound(
                msg.topic,
                msg.payload,
                msg.mid,
                msg.qos,
                msg.retain,
                time.time(),
                self._acks.connection,
            )
        )

    # The parser thread runs the two below; a batch parsed but not stored when the worker
    # stops is not acknowledged, so the broker delivers it again.

    def _run_parser(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            batch = self._collect(first)
            parsed = (batch, self._store.parse(batch) if self._store.parse_ahead else None)
            while not self._stop.is_set():
                try:
                    self._parsed.put(parsed, timeout=0.1)
                    break
                except queue.Full:
                    continue

    def _collect(self, first: Inbound) -> list[Inbound]:
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

    # The writer thread runs the two below.

    def _run_writer(self) -> None:
        while not self._stop.is_set():
            try:
                batch, work = self._parsed.get(timeout=0.1)
            except queue.Empty:
                continue
            stored = self._store.store(batch, work)
            if stored is None:  # stopping while the database is down: leave it to redelivery
                return
            self._acks.ack_broker(batch)
            self._acks.publish(stored.acks)
            self._finish(len(batch), stored.stats)

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
