"""The uplink: moves the outbox to the cloud, and keeps the status topic true.

paho-mqtt 2.x runs the network in its own thread (``loop_start``) and reconnects by itself.
One sender thread of ours does every publish and every outbox write: it leases a batch from
the outbox, publishes it at QoS 1 (events as one ``EventBatch`` on ``events``, a summary as
it is on ``summary``), each under a ``batch_id``. paho's callbacks (network thread) only put
what arrived on one queue that the sender drains, which keeps SQLite off the network thread
and avoids a lock cycle (paho calls ``on_publish`` holding its own message lock).

Delivery is end to end (DESIGN §3). The broker's PUBACK only frees a place in the in-flight
window (``max_inflight_batches``): a broker that restarted without ingest's subscription
answers PUBACK (MQTT 5 reason 16, "no matching subscribers") to a batch nobody received.
Rows leave the outbox only when ingest says, on the agent's ``acks`` topic, that the batch's
transaction committed (``stored``) or that it dead-lettered it (``rejected``). A batch with
no ack ``ack_timeout_s`` after its PUBACK (or four times the measured p99 round trip, if
longer: a cloud working through a backlog is not flooded with resends), and every PUBACKed
batch without an ack when the connection comes back, is given back to the outbox and sent
again; ingest is idempotent, so a resend costs a lookup, never a duplicate. At most
``max_unacked_batches`` wait for an ack.
The time from publish to ack is the measured edge -> cloud round trip (status and metrics).
An escalation goes alone on ``escalations``; its ``EscalationResult`` is its ack, handed to
``answered`` on the sender thread (which takes the escalation out of the outbox).

With a ``desired`` handler the uplink also subscribes (QoS 1, on every connect) to the agent's
retained ``desired`` topic and hands each valid ``DesiredState`` to it; a message that does
not validate, or names another agent, goes to the ``refused`` handler with the reason. With a
``overlay`` handler it subscribes to the retained ``config`` topic and hands it every payload.

Its paho client comes from ``edge_agent.mqtt_client``, the edge's one factory.

(Over 400 lines: one class, because its paho callbacks and its sender thread share the
in-flight and ack windows; the ack bookkeeping, and the link rate, is ``acks.py``.)
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from pydantic import ValidationError

from edge_agent.config import AgentConfig
from edge_agent.delivery.acks import AckWindow, Pending
from edge_agent.delivery.outbox import Outbox, OutboxItem
from edge_agent.mqtt_client import make_client
from edge_agent.validation import first_error
from shared.errors import StorageError
from shared.escalations import EscalationResult
from shared.messages import (
    Acks,
    AgentStatus,
    BatchAck,
    DesiredState,
    encode,
    encode_event_batch,
    new_event_id,
    utcnow,
)
from shared.topics import Channel, Topic

log = logging.getLogger(__name__)

_IDLE_WAIT_S = 0.05
"""How long the sender sleeps when there is nothing to do (bounds event latency)."""
_WAKE: tuple[int, int, None] = (-1, 0, None)
"""An inbox item that only wakes the sender (no mid is negative)."""
_Arrival = tuple[int, int, Acks | EscalationResult | None]
_NO_MATCHING_SUBSCRIBERS = 16
"""MQTT 5 PUBACK reason: accepted, but nobody subscribed (e.g. ingest not back yet)."""


@dataclass(slots=True)
class UplinkCounters:
    """What the uplink has done since the agent started."""

    batches_published: int = 0
    events_acked: int = 0
    """Events the cloud acknowledged as stored."""
    summaries_published: int = 0
    summaries_acked: int = 0
    rejected: int = 0
    """Events and summaries the cloud dead-lettered (acked as ``rejected``): dropped here."""
    resends: int = 0
    """Batches sent again: no ack within ``ack_timeout_s``, or a reconnect before the ack."""
    no_subscribers: int = 0
    """PUBACKs saying nobody subscribed (MQTT 5 reason 16): the cloud did not get them."""
    publish_failures: int = 0
    connects: int = 0


class Uplink:
    """An MQTT client that drains the outbox and publishes the agent's status."""

    def __init__(
        self,
        config: AgentConfig,
        outbox: Outbox,
        status: Callable[[], AgentStatus],
        *,
        desired: Callable[[DesiredState], None] | None = None,
        refused: Callable[[str], None] | None = None,
        overlay: Callable[[bytes], None] | None = None,
        answered: Callable[[EscalationResult], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._mqtt = config.mqtt
        self._outbox = outbox
        self._status = status
        self._events_topic = str(Topic(config.agent_id, Channel.EVENTS))
        self._summary_topic = str(Topic(config.agent_id, Channel.SUMMARY))
        self._status_topic = str(Topic(config.agent_id, Channel.STATUS))
        self._acks_topic = str(Topic(config.agent_id, Channel.ACKS))
        self._desired_topic = str(Topic(config.agent_id, Channel.DESIRED))
        self._desired = desired
        self._refused = refused
        self._config_topic = str(Topic(config.agent_id, Channel.CONFIG))
        self._overlay = overlay
        self._escalations_topic = str(Topic(config.agent_id, Channel.ESCALATIONS))
        self._results_topic = str(Topic(config.agent_id, Channel.ESCALATION_RESULT))
        self._answered = answered
        self._clock = clock
        self._max_inflight = config.outbox.max_inflight_batches
        self._max_unacked = config.outbox.max_unacked_batches
        self._batch_max = config.outbox.batch_max_events
        self.counters = UplinkCounters()
        self._inflight: dict[int, str] = {}
        """mid -> batch id of the batches the broker has not PUBACKed yet."""
        self._unacked = AckWindow(config.outbox.ack_timeout_s)
        self._inbox: queue.SimpleQueue[_Arrival] = queue.SimpleQueue()
        """From the network thread: (mid, PUBACK reason code, None) or (0, 0, an ack)."""
        self._connected = False
        self._ready = False
        """Connected and subscribed to ``acks``: an ack published before that would be lost."""
        self._reconnected = threading.Event()
        self._connect_failed = False
        self._status_now = threading.Event()
        self._stop = threading.Event()
        self._flush_until = 0.0
        self._client = self._make_client()
        self._thread = threading.Thread(target=self._send_loop, name="uplink", daemon=True)

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def inflight_batches(self) -> int:
        """Batches the broker has not PUBACKed yet."""
        return len(self._inflight)

    @property
    def unacked_batches(self) -> int:
        """Batches the cloud has not acknowledged yet."""
        return len(self._unacked)

    def ack_rtt(self) -> tuple[float, float] | None:
        """(p50, p99) seconds from publishing a batch to the cloud's ack, of recent batches."""
        return self._unacked.rtt()

    def link_mbps(self) -> float | None:
        """Mbit/s acked while draining a backlog (None: the link was never the limit)."""
        return self._unacked.link_mbps()

    def publish_status_now(self) -> None:
        """Publish the status at the sender's next turn, not only at the heartbeat."""
        self._status_now.set()

    def start(self) -> None:
        """Connect in the background (the agent works offline) and start sending."""
        self._client.connect_async(self._mqtt.host, self._mqtt.port, self._mqtt.keepalive)
        self._client.loop_start()
        self._thread.start()

    def stop(self, grace_s: float = 3.0) -> None:
        """Flush what the outbox holds for up to ``grace_s``, say "stopped", disconnect."""
        self._flush_until = time.monotonic() + grace_s
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._connected:
            offline = self._offline_status("stopped")
            info = self._client.publish(self._status_topic, offline, qos=1, retain=True)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                info.wait_for_publish(timeout=max(1.0, self._flush_until - time.monotonic()))
        self._client.disconnect()
        self._client.loop_stop()

    # -- paho callbacks (network thread): only flags and queue puts -----------------------

    def _make_client(self) -> mqtt.Client:
        client = make_client(
            self._mqtt.endpoint(),
            tls=self._mqtt.tls_files(),
            client_id=self._config.client_id,
            protocol=self._mqtt.protocol,
            reconnect_min_s=self._mqtt.reconnect_min_s,
            reconnect_max_s=self._mqtt.reconnect_max_s,
        )
        client.will_set(
            self._status_topic, self._offline_status("connection lost"), qos=1, retain=True
        )
        # Our own bound is the real one; leave paho room for the status messages too.
        client.max_inflight_messages_set(self._max_inflight + 2)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            self._log_connect_failure(f"refused the connection: {reason}", logging.ERROR)
            return
        if self._connect_failed:
            self._connect_failed = False
            log.info("connected to %s again as %s", self._where(), self._config.client_id)
        else:
            log.info("connected to %s as %s", self._where(), self._config.client_id)
        self._connected = True
        if self.counters.connects:
            self._reconnected.set()
        self.counters.connects += 1
        # Every connect: a clean session forgets subscriptions. Acks first, then (retained)
        # the desired state; batches wait for the SUBACK of acks.
        topics = [(self._acks_topic, 1)]
        if self._desired is not None:
            topics.append((self._desired_topic, 1))
        if self._overlay is not None:
            topics.append((self._config_topic, 1))
        if self._answered is not None:
            topics.append((self._results_topic, 1))
        client.subscribe(topics)
        self._status_now.set()

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[Any], props: Any
    ) -> None:
        if reasons and reasons[0].is_failure:
            # Without acks nothing would ever leave the outbox: say so, send nothing.
            log.error("broker refused the subscription to %s: %s", self._acks_topic, reasons[0])
            return
        self._ready = True
        self._inbox.put(_WAKE)  # the sender may publish now, not at its next idle timeout

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._log_connect_failure("cannot be reached", logging.WARNING)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if self._connected and not self._stop.is_set():
            log.warning("disconnected from %s: %s", self._where(), reason)
        elif not self._connected:
            # Dropped before CONNACK (bad TLS, an ACL plugin, a broker shutting down...).
            self._log_connect_failure(f"closed the connection before CONNACK: {reason}")
        self._connected = False
        self._ready = False

    def _log_connect_failure(self, what: str, level: int = logging.WARNING) -> None:
        """Log the first failure of a series, with its reason; the recovery is logged too."""
        if not self._connect_failed:
            self._connect_failed = True
            log.log(level, "broker %s %s; retrying in the background", self._where(), what)

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any
    ) -> None:
        self._inbox.put((mid, int(reason.value), None))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic in (self._acks_topic, self._results_topic):
            self._on_acks(msg.topic, msg.payload)
            return
        if msg.topic == self._config_topic and self._overlay is not None:
            self._overlay(bytes(msg.payload))
            return
        if msg.topic != self._desired_topic or self._desired is None:
            return
        if not msg.payload:
            # An empty retained message only clears the topic on the broker; an empty desired
            # state (back to the configured models) is a DesiredState with no pipelines.
            log.info("the retained desired state on %s was cleared", self._desired_topic)
            return
        try:
            desired = DesiredState.model_validate_json(msg.payload)
        except ValidationError as exc:
            self._refuse(f"invalid desired state: {first_error(exc)}")
            return
        if desired.agent_id != self._config.agent_id:
            self._refuse(
                f"desired state names agent {desired.agent_id!r}, this is {self._config.agent_id!r}"
            )
            return
        self._desired(desired)

    def _on_acks(self, topic: str, payload: bytes | bytearray) -> None:
        """Acks, or an escalation's result (its ack), for the sender."""
        kind: type[Acks] | type[EscalationResult] = (
            Acks if topic == self._acks_topic else EscalationResult
        )
        try:
            acks = kind.model_validate_json(payload)
        except ValidationError as exc:
            log.warning("ignored an invalid message on %s: %s", topic, first_error(exc))
            return
        if acks.agent_id != self._config.agent_id:
            log.warning("ignored acks for agent %r on %s", acks.agent_id, topic)
            return
        self._inbox.put((0, 0, acks))

    def _refuse(self, reason: str) -> None:
        log.warning("refused a message on %s: %s", self._desired_topic, reason)
        if self._refused is not None:
            self._refused(reason)

    # -- the sender thread ----------------------------------------------------------------

    def _send_loop(self) -> None:
        next_heartbeat = 0.0
        while True:
            busy = self._drain_inbox()
            if self._reconnected.is_set():
                self._reconnected.clear()
                self._resend(self._unacked.after_reconnect(), "the connection came back")
            if self._unacked:
                timeout = self._unacked.timeout_s
                self._resend(self._unacked.due(self._clock()), f"no ack in {timeout:.3g} s")
            if self._stop.is_set() and self._flushed():
                break
            now = time.monotonic()
            if self._connected and (self._status_now.is_set() or now >= next_heartbeat):
                self._status_now.clear()
                next_heartbeat = now + self._mqtt.heartbeat_s
                self._publish_status()
            if (
                self._ready
                and len(self._inflight) < self._max_inflight
                and len(self._unacked) < self._max_unacked
            ):
                busy |= self._publish_batch()
            if not busy:
                self._wait_for_inbox()

    def _flushed(self) -> bool:
        """Whether stopping may go on: everything acked, or the grace period is over."""
        if time.monotonic() >= self._flush_until or not self._connected:
            return True
        return not self._unacked and self._outbox.depth() == 0

    def _wait_for_inbox(self) -> None:
        try:
            item = self._inbox.get(timeout=_IDLE_WAIT_S)
        except queue.Empty:
            return
        self._handle(item)

    def _drain_inbox(self) -> bool:
        handled = False
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return handled
            self._handle(item)
            handled = True

    def _handle(self, item: _Arrival) -> None:
        mid, reason, acks = item
        if isinstance(acks, EscalationResult):
            self._escalation_answered(acks)
        elif acks is not None:
            self._cloud_acked(acks)
        else:
            self._pubacked(mid, reason)

    def _pubacked(self, mid: int, reason: int) -> None:
        batch_id = self._inflight.pop(mid, None)
        if batch_id is None:
            return  # a status message
        if reason >= 0x80:
            # The broker refused the batch (MQTT 5 reason code): send it again later.
            ids = self._unacked.refused(batch_id)
            if ids:
                self.counters.publish_failures += 1
                self._release(ids)
            return
        if self._unacked.pubacked(batch_id, self._clock()) and reason == _NO_MATCHING_SUBSCRIBERS:
            self.counters.no_subscribers += 1

    def _cloud_acked(self, acks: Acks) -> None:
        settled = self._unacked.settle(acks.acks, self._clock())
        if not settled:
            return
        ids = [item_id for done in settled for item_id in done.batch.ids]
        try:
            self._outbox.ack(ids)  # one transaction for every batch of this message
        except StorageError as exc:
            log.error("cannot delete %d acked items from the outbox (they go again): %s",
                      len(ids), exc)  # fmt: skip
            self._release(ids)
            return
        for done in settled:
            batch, ack = done.batch, done.ack
            if ack.outcome == "rejected":
                self.counters.rejected += len(batch.ids)
                log.warning(
                    "the cloud rejected a batch of %d %ss (dead-lettered, dropped here): %s",
                    len(batch.ids), batch.kind, ack.reason,
                )  # fmt: skip
            elif batch.kind == "summary":
                self.counters.summaries_acked += len(batch.ids)
            else:
                self.counters.events_acked += len(batch.ids)

    def _escalation_answered(self, result: EscalationResult) -> None:
        """The result acks its escalation; the handler takes it out of the outbox."""
        ack = BatchAck(batch_id=result.escalation_id, outcome="stored")
        self._unacked.settle([ack], self._clock())
        if self._answered is not None:
            self._answered(result)

    def _resend(self, batches: list[Pending], why: str) -> None:
        """Give batches back to the outbox, so they go out again in order."""
        if not batches:
            return
        ids = [item_id for batch in batches for item_id in batch.ids]
        self.counters.resends += len(batches)
        log.info("sending %d items again: %s", len(ids), why)
        self._release(ids)

    def _release(self, ids: list[str]) -> None:
        try:
            self._outbox.release(ids)
        except StorageError as exc:
            log.error("cannot give %d items back to the outbox: %s", len(ids), exc)

    def _publish_batch(self) -> bool:
        try:
            items = self._outbox.next_batch(self._batch_max)
            backlog = bool(items) and self._outbox.waiting()
        except StorageError as exc:
            log.error("cannot read the outbox: %s", exc)
            return False
        if not items:
            return False
        kind = items[0].kind
        if kind != "event":  # stored encoded: it goes out byte for byte as it was counted
            batch_id = items[0].item_id
            topic = self._summary_topic if kind == "summary" else self._escalations_topic
            payload = items[0].payload
        else:
            batch_id = new_event_id()
            topic, payload = self._events_topic, self._encode_batch(batch_id, items)
        ids = [item.item_id for item in items]
        info = self._client.publish(topic, payload, qos=1)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            # Not queued by paho: give the items back to the outbox.
            self.counters.publish_failures += 1
            self._release(ids)
            return False
        # NO_CONN still queues the message in paho, which sends it after the reconnect.
        self._inflight[info.mid] = batch_id
        now = self._clock()
        self._unacked.add(batch_id, kind, ids, now, size=len(payload), backlogged=backlog)
        if kind == "summary":
            self.counters.summaries_published += 1
        else:
            self.counters.batches_published += 1
        return True

    def _encode_batch(self, batch_id: str, items: list[OutboxItem]) -> bytes:
        payloads = [item.payload for item in items]
        return encode_event_batch(self._config.agent_id, batch_id, utcnow(), payloads)

    def _publish_status(self) -> None:
        self._client.publish(self._status_topic, encode(self._status()), qos=1, retain=True)

    def _offline_status(self, reason: str) -> bytes:
        status = AgentStatus(
            agent_id=self._config.agent_id,
            state="offline",
            reason=reason,
            ts=utcnow(),
            heartbeat_s=self._mqtt.heartbeat_s,
        )
        return encode(status)

    def _where(self) -> str:
        return f"{self._mqtt.host}:{self._mqtt.port}"
