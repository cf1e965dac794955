"""The rollout worker: ticks deployments forward and keeps every retained message published.

``RolloutWorker`` runs the ticks: it reads the active deployments, advances them (``store``),
commits, and only then publishes the desired states that changed (retained, QoS 1) with its
own MQTT client. It also subscribes to every agent's ``desired`` topic, so it knows what the
broker holds: whatever differs from the ``desired_states`` table (a publish lost with a
connection, a broker restarted without persistence) is published again on the next tick.
Publishing a desired state twice is harmless. Agents' remote configurations (``config``,
from the ``agent_configs`` table) are kept published the same way: ``RETAINED`` lists the
kinds of retained message, each with its channel and its SQL. On PostgreSQL, each tick runs under a
transaction-level advisory lock, so among several API replicas one advances deployments at
a time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import paho.mqtt.client as mqtt
from pydantic import ValidationError
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from cloud_api.config import parse_mqtt_url
from cloud_api.db import AdvisoryLock
from cloud_api.mqtt import make_client
from cloud_api.queries import agent_config
from cloud_api.rollout.shadow_store import tick_shadows
from cloud_api.rollout.store import desired_state_versions, desired_states, exclude_ticks, tick
from shared.errors import ConfigError, ContractError
from shared.messages import ConfigOverlay, DesiredState, encode, utcnow
from shared.tls import TlsFiles
from shared.topics import Channel, Topic, subscription
from shared.urls import MqttUrl

log = logging.getLogger(__name__)

RESEND_S = 10.0
"""A retained message the broker has not echoed back this long after a publish is sent again."""


@dataclass(frozen=True, slots=True)
class Retained:
    """A kind of retained message kept published per agent, and where SQL keeps it."""

    channel: Channel
    versions: Callable[[Session], list[tuple[str, datetime]]]
    """(agent id, issued_at) of every message the broker should hold."""
    payloads: Callable[[Session, Sequence[str]], dict[str, tuple[datetime, bytes]]]
    """(issued_at, encoded message) of the named agents."""
    issued_at: Callable[[bytes], datetime]
    """The issued_at of a message the broker echoed back; raises ValidationError."""


def _desired_payloads(
    session: Session, agent_ids: Sequence[str]
) -> dict[str, tuple[datetime, bytes]]:
    rows = desired_states(session, agent_ids=agent_ids)
    return {
        agent_id: (row.updated_at, encode(DesiredState.model_validate(row.payload)))
        for agent_id, row in rows.items()
    }


def _config_payloads(
    session: Session, agent_ids: Sequence[str]
) -> dict[str, tuple[datetime, bytes]]:
    rows = agent_config.configs(session, agent_ids=agent_ids)
    return {a: (row.updated_at, encode(agent_config.message(row))) for a, row in rows.items()}


RETAINED = (
    Retained(
        Channel.DESIRED,
        desired_state_versions,
        _desired_payloads,
        lambda payload: DesiredState.model_validate_json(payload).issued_at,
    ),
    Retained(
        Channel.CONFIG,
        agent_config.config_versions,
        _config_payloads,
        lambda payload: ConfigOverlay.model_validate_json(payload).issued_at,
    ),
)
_KINDS = {kind.channel: kind for kind in RETAINED}


class RolloutWorker:
    """Ticks deployments forward and keeps every agent's retained desired state published."""

    def __init__(
        self,
        *,
        engine: Engine,
        mqtt_url: str | MqttUrl,
        tls: TlsFiles | None = None,
        client_id: str,
        protocol: str = "5",
        tick_s: float = 1.0,
        grace: float = 3.0,
        clock: Callable[[], datetime] = utcnow,
        observer: Callable[[int | None], None] | None = None,
    ) -> None:
        """``observer`` hears each tick: desired states published, None if it failed
        (``RolloutMetrics.observe_tick``)."""
        if protocol not in {"5", "3.1.1"}:
            raise ConfigError(f"MQTT protocol must be '5' or '3.1.1', not {protocol!r}")
        if tick_s <= 0:
            raise ConfigError(f"rollout tick must be positive, not {tick_s}")
        broker = parse_mqtt_url(mqtt_url) if isinstance(mqtt_url, str) else mqtt_url
        self._host, self._port = broker.host, broker.port
        self._engine = engine
        self._tick_s = tick_s
        self._grace = grace
        self._clock = clock
        self._observer = observer
        self._postgres = engine.dialect.name == "postgresql"
        self._client = make_client(broker, tls=tls, client_id=client_id, protocol=protocol)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._lock = threading.Lock()
        # What the broker holds retained, and what was published and not echoed yet, by
        # (channel, agent).
        self._held: dict[tuple[Channel, str], datetime] = {}
        self._sent: dict[tuple[Channel, str], tuple[datetime, float]] = {}
        self._subscribed = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    @property
    def connected(self) -> bool:
        """Whether the control connection is up and subscribed to the desired topics."""
        return self._subscribed.is_set()

    def start(self) -> None:
        """Connect (retrying in the background) and start ticking."""
        if self._thread is not None:
            raise RuntimeError("RolloutWorker.start() called twice")
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()
        self._thread = threading.Thread(target=self._run, name="rollout", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish the tick in hand, then disconnect."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._client.disconnect()
        self._client.loop_stop()
        self._subscribed.clear()

    def wait_connected(self, timeout: float = 10.0) -> None:
        """Block until subscribed to the desired topics; TimeoutError otherwise."""
        if not self._subscribed.wait(timeout):
            raise TimeoutError(f"rollout not connected to {self._host}:{self._port} in {timeout} s")

    def run_once(self) -> int:
        """One tick: advance deployments (committed), then publish what the broker lacks.

        Returns how many desired states were published.
        """
        now = self._clock()
        with Session(self._engine, expire_on_commit=False) as session, session.begin():
            if self._postgres:
                locked = session.scalar(
                    select(func.pg_try_advisory_xact_lock(AdvisoryLock.ROLLOUT_TICK))
                )
                if not locked:
                    return 0  # another replica is ticking
            else:
                exclude_ticks(session)  # SQLite: reads and writes in one write transaction
            tick(session, now=now, grace=self._grace)
            tick_shadows(session, now=now)
        return self.publish_pending()

    def publish_pending(self) -> int:
        """Publish every retained message the broker does not hold as the database says it."""
        if not self._subscribed.is_set():
            return 0
        return sum(self._publish_kind(kind) for kind in RETAINED)

    def _publish_kind(self, kind: Retained) -> int:
        with Session(self._engine) as session:
            issued = kind.versions(session)
            now = time.monotonic()
            with self._lock:
                stale = [
                    agent_id
                    for agent_id, issued_at in issued
                    if self._held.get((kind.channel, agent_id)) != issued_at
                    and not self._recently_sent((kind.channel, agent_id), issued_at, now)
                ]
            if not stale:
                return 0
            payloads = kind.payloads(session, stale)
        for agent_id, (issued_at, payload) in payloads.items():
            self._client.publish(str(Topic(agent_id, kind.channel)), payload, qos=1, retain=True)
            with self._lock:
                self._sent[(kind.channel, agent_id)] = (issued_at, now)
        return len(payloads)

    def _recently_sent(self, key: tuple[Channel, str], issued_at: datetime, now: float) -> bool:
        sent = self._sent.get(key)
        return sent is not None and sent[0] == issued_at and now - sent[1] < RESEND_S

    @property
    def alive(self) -> bool:
        """Whether the tick thread runs (a liveness probe's question)."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            published: int | None = None
            try:
                published = self.run_once()
            except Exception:  # a bug or a database outage must not end rollouts for good
                if not self._failing:
                    log.exception("rollout tick failed; retrying every tick")
                    self._failing = True
            else:
                if self._failing:
                    log.info("rollout ticks work again")
                    self._failing = False
            if self._observer is not None:
                self._observer(published)
            self._stop.wait(self._tick_s)

    # -- network thread ------------------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        if reason.is_failure:
            log.error("broker %s:%s refused the rollout worker: %s", self._host, self._port, reason)
            return
        # The retained messages of every agent come back on these subscriptions: that is how
        # the worker learns what the broker holds.
        client.subscribe([(subscription(kind.channel), 1) for kind in RETAINED])

    def _on_subscribe(
        self, _client: mqtt.Client, _userdata: Any, _mid: int, reasons: list[Any], _props: Any
    ) -> None:
        if any(reason.is_failure for reason in reasons):
            log.error("broker refused the rollout worker's subscription: %s", reasons)
            return
        self._subscribed.set()

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        self._subscribed.clear()
        with self._lock:
            # What the broker holds is learnt again from the retained messages on reconnect.
            self._held.clear()
            self._sent.clear()
        if not self._stop.is_set():
            log.warning("rollout worker lost the broker (%s); reconnecting", reason)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = Topic.parse(msg.topic)
        except ContractError:
            return
        kind = _KINDS.get(topic.channel)
        if kind is None:
            return
        key = (kind.channel, topic.agent_id)
        if not msg.payload:  # the retained message was cleared
            with self._lock:
                self._held.pop(key, None)
            return
        try:
            issued_at = kind.issued_at(bytes(msg.payload))
        except ValidationError:
            log.warning("ignoring an invalid retained message on %s", msg.topic)
            return
        with self._lock:
            self._held[key] = issued_at
            if self._sent.get(key, (None, 0.0))[0] == issued_at:
                del self._sent[key]
