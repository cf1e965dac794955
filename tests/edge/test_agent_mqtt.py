"""The agent against a real Mosquitto and the real model: what reaches a subscriber."""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud_api.ingest.worker import IngestWorker
from edge_agent.agent import Agent
from edge_agent.inference.slot import file_sha256
from shared.messages import AgentStatus, Event, EventBatch
from shared.topics import Channel, Topic
from tests.conftest import start_ingest
from tests.edge.conftest import MODEL, AgentConfigFactory
from tests.services import Mosquitto

pytestmark = pytest.mark.integration

TIMEOUT_S = 60.0


def wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Subscriber:
    """A paho client that records everything under one agent's subtree.

    Its MQTT 5 session outlives a disconnect (on a persistent broker, a restart too), so
    QoS 1 messages published while it is away are delivered when it is back.
    """

    def __init__(self, broker: Mosquitto, agent_id: str) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._filter = f"aiot/v1/agents/{agent_id}/#"
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"sub-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *args: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(1, 1)
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 600
        # Mosquitto 2.0.11 does not keep a v5 session that began with clean start across a
        # restart (so a message in flight to us would be lost); clean_start=False it keeps.
        self._client.connect("127.0.0.1", broker.port, clean_start=False, properties=properties)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise AssertionError("test subscriber could not subscribe")

    def _on_connect(self, client: mqtt.Client, *args: Any) -> None:
        client.subscribe(self._filter, qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def batches(self, agent_id: str) -> list[EventBatch]:
        topic = str(Topic(agent_id, Channel.EVENTS))
        with self._lock:
            return [EventBatch.model_validate_json(p) for t, p, _ in self.messages if t == topic]

    def events(self, agent_id: str) -> list[Event]:
        return [e for b in self.batches(agent_id) for e in b.events]

    def statuses(self, agent_id: str) -> list[AgentStatus]:
        topic = str(Topic(agent_id, Channel.STATUS))
        with self._lock:
            return [AgentStatus.model_validate_json(p) for t, p, _ in self.messages if t == topic]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def events_out(agent: Agent) -> int:
    return sum(p.counters.events_out for p in agent.pipelines)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_agent_publishes_event_batches_with_model_identity(
    broker: Mosquitto, ingest: IngestWorker, agent_config: AgentConfigFactory, protocol: str
) -> None:
    config = agent_config(broker.url, protocol=protocol)
    subscriber = Subscriber(broker, config.agent_id)
    agent = Agent(config)
    agent.start()
    try:
        wait_until(agent.done, "the agent to deliver every event")
        wait_until(lambda: len(subscriber.events(config.agent_id)) >= 4, "4 events")
    finally:
        agent.stop()
    wait_until(lambda: subscriber.statuses(config.agent_id)[-1].state == "offline", "offline")
    subscriber.close()

    batches = subscriber.batches(config.agent_id)
    assert all(b.agent_id == config.agent_id for b in batches)
    events = subscriber.events(config.agent_id)
    assert [(e.state, e.label) for e in events] == [
        ("start", "imbalance"),
        ("end", "imbalance"),
        ("start", "bearing_inner_race"),
        ("end", "bearing_inner_race"),
    ]
    sha256 = file_sha256(MODEL)
    for event in events:
        assert (event.model.name, event.model.version, event.model.sha256) == (
            "vibration-anomaly",
            "1.0.0",
            sha256,
        )
        assert event.pipeline == "spindle"
    statuses = subscriber.statuses(config.agent_id)
    online = [s for s in statuses if s.state == "online"]
    assert online
    assert online[-1].pipelines[0].model is not None
    assert online[-1].pipelines[0].model.sha256 == sha256
    assert (statuses[-1].state, statuses[-1].reason) == ("offline", "stopped")


def test_outbox_keeps_events_until_the_cloud_acknowledges_them(
    own_broker: Mosquitto, own_ingest: IngestWorker, agent_config: AgentConfigFactory
) -> None:
    config = agent_config(own_broker.url)
    subscriber = Subscriber(own_broker, config.agent_id)
    own_broker.stop()
    agent = Agent(config)
    agent.start()
    try:
        wait_until(agent.sources_done, "the source to end")
        assert agent.outbox is not None
        produced = events_out(agent)
        assert produced == 4
        # No broker, no ack: nothing may have left the outbox.
        assert agent.outbox.depth() == produced
        own_broker.start()
        wait_until(lambda: agent.outbox is not None and agent.outbox.depth() == 0, "empty outbox")
        wait_until(lambda: len(subscriber.events(config.agent_id)) >= produced, "all events")
    finally:
        agent.stop()
        subscriber.close()
    assert len({e.id for e in subscriber.events(config.agent_id)}) == produced


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_puback_without_the_clouds_ack_deletes_nothing_and_the_batch_goes_again(
    own_broker: Mosquitto, agent_config: AgentConfigFactory, tmp_path: Path, protocol: str
) -> None:
    """The soak's loss: the broker takes every batch (PUBACK; MQTT 5 reason 16, nobody
    subscribed) while ingest is away. Rows stay until ingest, back, stores and acks them."""
    config = agent_config(own_broker.url, protocol=protocol, ack_timeout_s=1.0)
    agent = Agent(config)
    agent.start()
    try:
        wait_until(agent.sources_done, "the source to end")
        assert agent.uplink is not None
        assert agent.outbox is not None
        produced = events_out(agent)
        wait_until(lambda: agent.uplink is not None and agent.uplink.counters.resends >= 2,
                   "published batches to time out and go again")  # fmt: skip
        assert agent.outbox.depth() >= produced  # events (and summaries) all still here
        if protocol == "5":
            assert agent.uplink.counters.no_subscribers >= 1
        assert agent.uplink.counters.events_acked == 0
        ingest = start_ingest(own_broker, tmp_path)
        worker = next(ingest)
        try:
            wait_until(agent.done, "every event acked by the cloud")
            assert worker.events_stored == produced
            assert agent.uplink.counters.events_acked >= produced
            status = agent.status()
            assert status.unacked_batches == 0
            assert status.ack_rtt_p50_s is not None
            assert status.ack_rtt_p99_s is not None
        finally:
            next(ingest, None)
    finally:
        agent.stop()


def test_every_event_survives_a_broker_outage(
    own_broker: Mosquitto, own_ingest: IngestWorker, agent_config: AgentConfigFactory
) -> None:
    faults = ["imbalance", "misalignment", "bearing_outer_race", "bearing_inner_race", "impact"]
    schedule = [
        {"at_s": 3 + 6 * i, "duration_s": 3, "fault": faults[i % len(faults)]} for i in range(10)
    ]
    config = agent_config(
        own_broker.url, duration_s=63, schedule=schedule, speed=15, batch_max_events=1
    )
    subscriber = Subscriber(own_broker, config.agent_id)
    agent = Agent(config)
    agent.start()
    try:
        wait_until(lambda: events_out(agent) >= 4, "the first events")
        own_broker.stop()
        produced_before_outage_ended = events_out(agent)
        time.sleep(2)  # an outage while the pipeline keeps producing
        own_broker.start()
        wait_until(agent.done, "every event delivered after the outage")
        wait_until(
            lambda: len({e.id for e in subscriber.events(config.agent_id)}) >= events_out(agent),
            "the subscriber to receive every event",
        )
        assert agent.uplink is not None
        assert agent.uplink.counters.connects >= 2
    finally:
        agent.stop()
        subscriber.close()
    received = subscriber.events(config.agent_id)
    assert len({e.id for e in received}) == events_out(agent) == 20
    assert events_out(agent) > produced_before_outage_ended
    # Duplicates are allowed (at least once) but the order of first arrival is kept per event.
    first_seen: dict[str, Event] = {}
    for event in received:
        first_seen.setdefault(event.id, event)
    assert [e.state for e in first_seen.values()] == ["start", "end"] * 10


def test_a_broker_that_drops_the_agent_before_connack_is_logged_once_then_the_recovery(
    agent_config: AgentConfigFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Something listens but closes every connection at once (a TLS port, a proxy, a broker
    going down): one warning with the reason, not one per retry; one line when it works."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted = 0

    def drop_everyone() -> None:
        nonlocal accepted
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted += 1
            conn.close()

    thread = threading.Thread(target=drop_everyone, daemon=True)
    thread.start()
    config = agent_config(f"mqtt://127.0.0.1:{port}")
    config = config.model_copy(
        update={"mqtt": config.mqtt.model_copy(update={"reconnect_min_s": 1, "reconnect_max_s": 1})}
    )
    agent = Agent(config)
    broker = Mosquitto(tmp_path / "broker", port=port)
    (tmp_path / "broker").mkdir()
    with caplog.at_level(logging.INFO, logger="edge_agent.delivery.uplink"):
        agent.start()
        try:
            wait_until(lambda: accepted >= 3, "three dropped attempts")
            listener.close()
            thread.join()
            broker.start()  # a real broker on the same port: the agent gets in
            wait_until(lambda: agent.uplink is not None and agent.uplink.connected, "a connect")
        finally:
            agent.stop()
            broker.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "edge_agent.delivery.uplink"]
    dropped = [line for line in lines if "before CONNACK" in line or "cannot be reached" in line]
    assert len(dropped) == 1, lines
    assert any("connected to 127.0.0.1" in line and "again" in line for line in lines), lines
