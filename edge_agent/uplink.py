"""The uplink: moves the outbox to the broker, and keeps the status topic true.

paho-mqtt 2.x runs the network in its own thread (``loop_start``) and reconnects by itself.
One sender thread of ours does every publish: it leases a batch from the outbox, publishes
it at QoS 1 (events as one ``EventBatch`` on ``events``, a summary as it is on ``summary``)
and remembers ``mid -> item ids``. paho's ``on_publish``
(the PUBACK) only queues the mid; the sender then acks exactly those ids in the outbox.
Acking on the sender thread keeps SQLite off the network thread and avoids a lock cycle:
paho calls ``on_publish`` while holding its own message lock, which ``publish`` also takes.

Delivery is at least once. Unacked batches stay in paho's queue across a reconnect and are
resent in order, with the same mids, so their PUBACKs still find their ids; the outbox keeps
every event until then, so a crash of the whole process resends them on the next start.
The number of batches in flight is bounded (mids are 16-bit, and memory is finite).

With a ``desired`` handler the uplink also subscribes (QoS 1, on every connect) to the agent's
retained ``desired`` topic and hands each valid ``DesiredState`` to it; a message that does
not validate, or names another agent, goes to the ``refused`` handler with the reason.
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
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import ValidationError

from edge_agent.config import AgentConfig
from edge_agent.outbox import Outbox, OutboxItem, PayloadKind
from shared.errors import StorageError
from shared.messages import AgentStatus, DesiredState, Event, EventBatch, encode, utcnow
from shared.topics import Channel, Topic

log = logging.getLogger(__name__)

_IDLE_WAIT_S = 0.05
"""How long the sender sleeps when there is nothing to do (bounds event latency)."""


@dataclass(slots=True)
class UplinkCounters:
    """What the uplink has done since the agent started."""

    batches_published: int = 0
    events_acked: int = 0
    summaries_published: int = 0
    summaries_acked: int = 0
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
    ) -> None:
        self._config = config
        self._mqtt = config.mqtt
        self._outbox = outbox
        self._status = status
        self._events_topic = str(Topic(config.agent_id, Channel.EVENTS))
        self._summary_topic = str(Topic(config.agent_id, Channel.SUMMARY))
        self._status_topic = str(Topic(config.agent_id, Channel.STATUS))
        self._desired_topic = str(Topic(config.agent_id, Channel.DESIRED))
        self._desired = desired
        self._refused = refused
        self._max_inflight = config.outbox.max_inflight_batches
        self._batch_max = config.outbox.batch_max_events
        self.counters = UplinkCounters()
        self._inflight: dict[int, tuple[PayloadKind, list[str]]] = {}
        self._pubacks: queue.SimpleQueue[tuple[int, bool]] = queue.SimpleQueue()
        self._connected = False
        self._unreachable_logged = False
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
        return len(self._inflight)

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
        v5 = self._mqtt.protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self._config.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else True,
        )
        if self._mqtt.username is not None:
            client.username_pw_set(self._mqtt.username, self._mqtt.password)
        client.will_set(
            self._status_topic, self._offline_status("connection lost"), qos=1, retain=True
        )
        client.reconnect_delay_set(self._mqtt.reconnect_min_s, self._mqtt.reconnect_max_s)
        # Our own bound is the real one; leave paho room for the status messages too.
        client.max_inflight_messages_set(self._max_inflight + 2)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            if not self._unreachable_logged:
                self._unreachable_logged = True
                log.error("broker %s refused the connection: %s", self._where(), reason)
            return
        self._connected = True
        self._unreachable_logged = False
        self.counters.connects += 1
        log.info("connected to %s as %s", self._where(), self._config.client_id)
        if self._desired is not None:
            # Every connect: a clean session forgets it; the retained state comes right back.
            client.subscribe(self._desired_topic, qos=1)
        self._status_now.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        if not self._unreachable_logged:
            self._unreachable_logged = True
            log.warning("cannot reach broker %s; retrying in the background", self._where())

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if self._connected and not self._stop.is_set():
            log.warning("disconnected from %s: %s", self._where(), reason)
        self._connected = False

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any
    ) -> None:
        self._pubacks.put((mid, not reason.is_failure))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
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
            self._refuse(f"invalid desired state: {_first_error(exc)}")
            return
        if desired.agent_id != self._config.agent_id:
            self._refuse(
                f"desired state names agent {desired.agent_id!r}, this is {self._config.agent_id!r}"
            )
            return
        self._desired(desired)

    def _refuse(self, reason: str) -> None:
        log.warning("refused a message on %s: %s", self._desired_topic, reason)
        if self._refused is not None:
            self._refused(reason)

    # -- the sender thread ----------------------------------------------------------------

    def _send_loop(self) -> None:
        next_heartbeat = 0.0
        while True:
            busy = self._handle_pubacks()
            if self._stop.is_set() and self._flushed():
                break
            now = time.monotonic()
            if self._connected and (self._status_now.is_set() or now >= next_heartbeat):
                self._status_now.clear()
                next_heartbeat = now + self._mqtt.heartbeat_s
                self._publish_status()
            if self._connected and len(self._inflight) < self._max_inflight:
                busy |= self._publish_batch()
            if not busy:
                self._wait_for_puback()

    def _flushed(self) -> bool:
        """Whether stopping may go on: everything acked, or the grace period is over."""
        if time.monotonic() >= self._flush_until or not self._connected:
            return True
        return not self._inflight and self._outbox.depth() == 0

    def _wait_for_puback(self) -> None:
        try:
            mid, ok = self._pubacks.get(timeout=_IDLE_WAIT_S)
        except queue.Empty:
            return
        self._acked(mid, ok)

    def _handle_pubacks(self) -> bool:
        handled = False
        while True:
            try:
                mid, ok = self._pubacks.get_nowait()
            except queue.Empty:
                return handled
            self._acked(mid, ok)
            handled = True

    def _acked(self, mid: int, ok: bool) -> None:
        inflight = self._inflight.pop(mid, None)
        if inflight is None:
            return  # a status message
        kind, ids = inflight
        if not ok:
            # The broker refused the batch (MQTT 5 reason code): send it again later.
            self.counters.publish_failures += 1
            self._outbox.release(ids)
            return
        try:
            self._outbox.ack(ids)
        except StorageError as exc:
            log.error(
                "cannot ack %d %ss in the outbox (they will be sent again): %s", len(ids), kind, exc
            )
            return
        if kind == "summary":
            self.counters.summaries_acked += len(ids)
        else:
            self.counters.events_acked += len(ids)

    def _publish_batch(self) -> bool:
        try:
            items = self._outbox.next_batch(self._batch_max)
        except StorageError as exc:
            log.error("cannot read the outbox: %s", exc)
            return False
        if not items:
            return False
        kind = items[0].kind
        if kind == "summary":  # stored encoded: it goes out byte for byte as it was counted
            topic, payload = self._summary_topic, items[0].payload
        else:
            topic, payload = self._events_topic, self._encode_batch(items)
        ids = [item.item_id for item in items]
        info = self._client.publish(topic, payload, qos=1)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            # Not queued by paho: give the items back to the outbox.
            self.counters.publish_failures += 1
            self._outbox.release(ids)
            return False
        # NO_CONN still queues the message in paho, which sends it after the reconnect.
        self._inflight[info.mid] = (kind, ids)
        if kind == "summary":
            self.counters.summaries_published += 1
        else:
            self.counters.batches_published += 1
        return True

    def _encode_batch(self, items: list[OutboxItem]) -> bytes:
        batch = EventBatch(
            agent_id=self._config.agent_id,
            sent_at=utcnow(),
            events=[Event.model_validate_json(item.payload) for item in items],
        )
        return encode(batch)

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


def _first_error(exc: ValidationError) -> str:
    """The first validation error as ``loc: message`` (a whole report is too long to publish)."""
    errors = exc.errors()
    if not errors:
        return str(exc)
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "(message)"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"
