"""The escalation worker: one MQTT session (a shared subscription when several run), one
thread that batches what arrives and hands it to the runner.

paho's network thread only enqueues. The runner thread takes up to ``batch_max`` messages or
what came within ``wait_ms`` of the first (the dynamic batch), answers them (``runner.py``),
publishes each answer on its agent's ``escalations/result`` and only then acknowledges the
messages to the broker: an escalation is never lost between the broker and SQL.

The thread does not die: a batch whose handling fails anyway (the database dropping while a
bad message is being isolated, say) is logged, counted (``loop_failures``) and tried again
after a pause that grows while it keeps failing. A retry is safe: stored answers are given
again, and an escalation spends its quota once. A batch that keeps failing while the
database is reachable (even dead-lettering its bad message fails) is given up after
``GIVE_UP_AFTER`` tries and acknowledged: the agents resend what has no result yet, so it
does not hold every escalation behind it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import onnxruntime as ort
import paho.mqtt.client as mqtt
from sqlalchemy import Engine

from cloud_api.config import Settings, parse_mqtt_url
from cloud_api.escalation.model import preferred_providers
from cloud_api.escalation.quota import Quota
from cloud_api.escalation.runner import Answers, Runner, RunStats
from cloud_api.ingest.acks import Acknowledger
from cloud_api.ingest.parse import Inbound, first_line
from cloud_api.ingest.writers import is_transient
from cloud_api.mqtt import check_protocol, connect_persistent, make_client, worker_filter
from cloud_api.registry import ArtifactStore
from shared.errors import ConfigError
from shared.messages import encode
from shared.tls import TlsFiles
from shared.topics import Channel
from shared.urls import MqttUrl

log = logging.getLogger(__name__)

RETRY_MIN_S = 0.1
RETRY_MAX_S = 5.0
GIVE_UP_AFTER = 5
"""Failures of one batch, the database reachable, after which the runner leaves the batch to
its agents' resends (an escalation stays in the agent's outbox until its result arrives)."""


class EscalationWorker:
    """Subscribes to every agent's ``escalations`` and answers them with the cloud models."""

    def __init__(
        self,
        *,
        engine: Engine,
        artifacts: ArtifactStore,
        mqtt_url: str | MqttUrl,
        client_id: str,
        tls: TlsFiles | None = None,
        protocol: str = "5",
        share_group: str | None = None,
        batch_max: int = 32,
        wait_ms: float = 10.0,
        quota_per_min: float = 600.0,
        quota_burst: int = 100,
        threads: int = 0,
        session_expiry_s: int = 24 * 3600,
        observer: Callable[[RunStats], None] | None = None,
    ) -> None:
        if batch_max < 1 or wait_ms < 0:
            raise ConfigError(
                f"batch_max must be >= 1 and wait_ms >= 0, not {batch_max}, {wait_ms}"
            )
        check_protocol(protocol, share_group)
        self._filter = worker_filter(Channel.ESCALATIONS, share_group)
        broker = parse_mqtt_url(mqtt_url) if isinstance(mqtt_url, str) else mqtt_url
        self._host, self._port = broker.host, broker.port
        self._runner = Runner(
            engine=engine,
            artifacts=artifacts,
            quota=Quota(per_min=quota_per_min, burst=quota_burst),
            batch_max=batch_max,
            threads=threads,
        )
        self._batch_max, self._wait_s = batch_max, wait_ms / 1000.0
        self._v5 = protocol == "5"
        self._session_expiry_s = session_expiry_s
        self._observer = observer
        self._client = make_client(
            broker, tls=tls, client_id=client_id, protocol=protocol, persistent_session=True,
            manual_ack=True,
        )  # fmt: skip
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._acks = Acknowledger(self._client)
        self._queue: queue.SimpleQueue[Inbound] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread: threading.Thread | None = None
        self._progress = threading.Condition()
        self._received = 0
        self._done = 0
        self.totals = RunStats()

    @property
    def alive(self) -> bool:
        """Whether the runner thread runs."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up and the subscription in place."""
        return self._connected.is_set()

    def start(self) -> None:
        """Say which provider the models will run on, connect, and start answering."""
        log.info(
            "escalation runner: ONNX Runtime %s offers %s; cloud models run on %s",
            ort.__version__,
            ", ".join(ort.get_available_providers()),
            "cuda" if preferred_providers()[0] == "CUDAExecutionProvider" else "cpu",
        )
        self._thread = threading.Thread(target=self._run, name="escalation-runner", daemon=True)
        self._thread.start()
        connect_persistent(
            self._client, self._host, self._port, v5=self._v5,
            session_expiry_s=self._session_expiry_s,
        )  # fmt: skip

    def stop(self) -> None:
        """Finish the batch in hand, then disconnect; unacknowledged escalations stay queued."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._client.disconnect()
        self._client.loop_stop()

    def wait_connected(self, timeout: float = 10.0) -> None:
        """Block until subscribed; TimeoutError otherwise."""
        if not self._connected.wait(timeout):
            raise TimeoutError(f"escalation runner not connected to {self._host}:{self._port}")

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Block until everything received so far is answered; TimeoutError otherwise."""
        with self._progress:
            if not self._progress.wait_for(lambda: self._done >= self._received, timeout):
                raise TimeoutError(f"runner still busy: {self._done} of {self._received} done")

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error(
                "broker %s:%s refused the escalation runner: %s", self._host, self._port, reason
            )
            return
        client.subscribe([(self._filter, 1)])

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _m: int, reasons: list[Any], _p: Any) -> None:
        if any(reason.is_failure for reason in reasons):
            log.error("broker refused the subscription %s: %s", self._filter, reasons)
            return
        self._connected.set()
        log.info("escalation runner subscribed to %s", self._filter)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self._acks.connection_lost()
        if self._connected.is_set() and not self._stop.is_set():
            log.warning("escalation runner lost the broker (%s); reconnecting", reason)
        self._connected.clear()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._progress:
            self._received += 1
        inbound = Inbound(
            msg.topic, msg.payload, msg.mid, msg.qos, msg.retain, time.time(), self._acks.connection
        )
        self._queue.put(inbound)

    def _run(self) -> None:
        batch: list[Inbound] | None = None
        delay, failures = RETRY_MIN_S, 0
        while not self._stop.is_set():
            if batch is None:
                try:
                    first = self._queue.get(timeout=0.1)
                except queue.Empty:
                    continue
                batch = self._collect(first)
            try:
                answered = self._answer(batch)
            except Exception as exc:
                failures += 1
                if failures == 1:
                    log.exception("escalation runner failed on a batch; retrying it")
                self._finish(0, RunStats(loop_failures=1))
                if failures >= GIVE_UP_AFTER and not is_transient(exc):
                    log.error(
                        "escalation runner gives up a batch of %d after %d failures (%s); "
                        "its agents resend what is unanswered", len(batch), failures,
                        first_line(exc),
                    )  # fmt: skip
                    self._acks.ack_broker(batch)
                    batch, delay, failures = None, RETRY_MIN_S, 0
                    continue
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            if not answered:  # stopping while the database is down: left to redelivery
                return
            if failures:
                log.info("escalation runner answered the batch after %d failures", failures)
            batch, delay, failures = None, RETRY_MIN_S, 0

    def _answer(self, batch: list[Inbound]) -> bool:
        """Answer, publish and acknowledge ``batch``; False when stopping first."""
        handled = self._handle(batch)
        if handled is None:
            return False
        results, stats = handled
        for topic, result in results:
            self._client.publish(topic, encode(result), qos=1)
        self._acks.ack_broker(batch)
        self._finish(len(batch), stats)
        return True

    def _collect(self, first: Inbound) -> list[Inbound]:
        """The dynamic batch: up to ``batch_max`` messages, or what came within ``wait_ms``."""
        batch = [first]
        deadline = time.monotonic() + self._wait_s
        while len(batch) < self._batch_max:
            remaining = deadline - time.monotonic()
            try:
                batch.append(
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
        return batch

    def _handle(self, batch: list[Inbound]) -> tuple[Answers, RunStats] | None:
        """The runner's answer, waiting out a database that is down; a batch that fails for
        another reason is split until the message behind it stands alone: a dead letter, and
        a refusal when it is an escalation."""
        delay, failing = RETRY_MIN_S, False
        while True:
            try:
                handled = self._runner.handle(batch)
            except Exception as exc:
                if not is_transient(exc):
                    return self._isolate(batch, exc)
                if not failing:
                    log.error("escalation runner cannot reach the database: %s; retrying", exc)
                    failing = True
                if self._stop.wait(delay):
                    return None
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            if failing:
                log.info("escalation runner reaches the database again")
            return handled

    def _isolate(self, batch: list[Inbound], exc: Exception) -> tuple[Answers, RunStats] | None:
        if len(batch) == 1:
            log.exception("dead-lettered an escalation the runner failed on", exc_info=exc)
            return self._runner.dead_letter(batch[0], f"the runner failed on it: {first_line(exc)}")
        results: Answers = []
        stats = RunStats()
        for half in (batch[: len(batch) // 2], batch[len(batch) // 2 :]):
            handled = self._handle(half)
            if handled is None:
                return None
            results += handled[0]
            stats += handled[1]
        return results, stats

    def _finish(self, count: int, stats: RunStats) -> None:
        with self._progress:
            self.totals += stats
            self._done += count
            self._progress.notify_all()
        if self._observer is not None:
            try:
                self._observer(stats)
            except Exception:
                log.exception("escalation observer failed")


def escalation_worker(
    settings: Settings,
    engine: Engine,
    artifacts: ArtifactStore,
    *,
    observer: Callable[[RunStats], None] | None = None,
) -> EscalationWorker:
    """The runner the settings describe (not started): the API's lifespan and
    ``aiot cloud escalations`` build it here."""
    client_id = settings.escalation_client_id or f"{settings.ingest_client_id[:60]}-esc"
    return EscalationWorker(
        engine=engine,
        artifacts=artifacts,
        mqtt_url=settings.ingest_broker(),
        tls=settings.mqtt_tls(),
        protocol=settings.mqtt_protocol,
        client_id=client_id,
        share_group=settings.escalation_share_group,
        batch_max=settings.escalation_batch_max,
        wait_ms=settings.escalation_wait_ms,
        quota_per_min=settings.escalation_quota_per_min,
        quota_burst=settings.escalation_quota_burst,
        session_expiry_s=settings.ingest_session_expiry_s,
        observer=observer,
    )
