"""Escalation end to end at the edge: the real agent, the real vibration model, a real
Mosquitto, and a small cloud stand-in in the test that answers escalations.

The responder subscribes to every agent's ``escalations`` and publishes an
``EscalationResult`` (answered or refused, as the test says) on the agent's
``escalations/result``, which is all the agent sees of the cloud model runner.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import generate_latest

from cloud_api.ingest.worker import IngestWorker
from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from edge_agent.delivery.escalation import EscalationDesk
from edge_agent.delivery.escalation_config import EscalateConfig
from edge_agent.inference.slot import load_slot
from edge_agent.pipelines.config import PipelineConfig
from edge_agent.pipelines.sensor import SensorPipeline
from shared.escalations import Escalation, EscalationResult
from shared.messages import Event, ModelRef, PipelineStatus, encode
from shared.topics import Channel, Topic, subscription
from tests.edge.conftest import AgentConfigFactory
from tests.edge.conftest import agent_config as agent_config  # the fixture
from tests.edge.test_agent_mqtt import Subscriber, wait_until
from tests.services import Mosquitto

pytestmark = pytest.mark.integration

CLOUD = ModelRef(name="vibration-cloud", version="2.0.0", sha256="c" * 64)
Judge = Callable[[Escalation], EscalationResult]


def agreeing(escalation: Escalation) -> EscalationResult:
    """The cloud model's answer: the edge's own label (an agreement)."""
    return EscalationResult(
        escalation_id=escalation.id, agent_id=escalation.agent_id,
        pipeline=escalation.pipeline, ts=datetime.now(UTC), outcome="answered",
        model=CLOUD, label=escalation.label, score=0.99, inference_ms=1.0,
    )  # fmt: skip


def disagreeing(escalation: Escalation) -> EscalationResult:
    """The cloud model sees another fault than the edge did."""
    return agreeing(escalation).model_copy(update={"label": "misalignment", "score": 0.8})


def refusing(escalation: Escalation) -> EscalationResult:
    return EscalationResult(
        escalation_id=escalation.id, agent_id=escalation.agent_id,
        pipeline=escalation.pipeline, ts=datetime.now(UTC), outcome="refused",
        reason=f"no cloud model for pipeline {escalation.pipeline}",
    )  # fmt: skip


class Responder:
    """Answers every escalation it receives with ``judge``; reconnects with the broker."""

    def __init__(self, broker: Mosquitto, judge: Judge) -> None:
        self.received: list[Escalation] = []
        self._judge = judge
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"responder-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self._client.on_connect = lambda client, *args: client.subscribe(
            subscription(Channel.ESCALATIONS), qos=1
        )
        self._client.on_subscribe = lambda *args: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(1, 1)
        self._client.connect("127.0.0.1", broker.port)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise AssertionError("the responder could not subscribe")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        escalation = Escalation.model_validate_json(msg.payload)
        with self._lock:
            self.received.append(escalation)
        result = self._judge(escalation)
        topic = str(Topic(escalation.agent_id, Channel.ESCALATION_RESULT))
        client.publish(topic, encode(result), qos=1)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def escalating(
    config: AgentConfig, actions: list[dict[str, Any]] | None = None, **escalate: Any
) -> AgentConfig:
    (pipeline,) = config.pipelines
    update: dict[str, Any] = {"escalate": EscalateConfig.model_validate(escalate)}
    if actions is not None:
        section = pipeline.model_dump(exclude={"escalate"}) | {"actions": actions}
        update["actions"] = PipelineConfig.model_validate(section).actions
    return config.model_copy(update={"pipelines": [pipeline.model_copy(update=update)]})


def status(agent: Agent) -> PipelineStatus:
    (pipeline,) = agent.status().pipelines
    return pipeline


def reconciled(subscriber: Subscriber, agent_id: str) -> list[Event]:
    return [e for e in subscriber.events(agent_id) if e.kind == "escalation"]


def in_band(config: AgentConfig, lo: float, hi: float) -> int:
    """How many windows of the config's (deterministic) source the shipped model scores
    within [lo, hi]: what the pipeline offers to escalate."""
    (section,) = config.pipelines
    reference = SensorPipeline(section, load_slot(section.model, section.runtime))
    model = reference.slot.current()
    windows = np.stack([s.data for s in reference.source.samples(threading.Event())])
    scores = 1.0 - model.runtime.run(windows.astype(np.float32))[:, model.normal_index]
    return int(((scores >= lo) & (scores <= hi)).sum())


def test_the_budget_holds_under_a_burst_and_the_answers_link_to_edge_events(
    broker: Mosquitto,
    ingest: IngestWorker,
    agent_config: AgentConfigFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every fault window is unsure (band [0.5, 1]): a burst of dozens. The budget's clock
    stands still, so no token comes back: exactly the budget leaves, every other input in
    the band is dropped and counted; each answer comes back as an event that names the edge
    event of its input."""
    budget = 3
    config = escalating(agent_config(broker.url, duration_s=30), band=(0.5, 1.0),
                        budget_per_min=budget)  # fmt: skip
    unsure = in_band(config, 0.5, 1.0)
    assert unsure > budget + 10
    stopped = partial(EscalationDesk, clock=lambda: 1000.0)
    monkeypatch.setattr("edge_agent.agent.EscalationDesk", stopped)
    subscriber = Subscriber(broker, config.agent_id)
    responder = Responder(broker, agreeing)
    agent = Agent(config)
    agent.start()
    try:
        wait_until(agent.sources_done, "the source to end")
        wait_until(lambda: status(agent).escalations_answered == budget, "every answer")
        wait_until(agent.done, "every event delivered")
    finally:
        agent.stop()
        responder.close()
    final = status(agent)
    assert (final.escalated, final.escalations_dropped_budget) == (budget, unsure - budget)
    assert final.escalations_dropped_offline == final.escalations_queued == 0
    assert final.escalations_agreed == final.escalations_answered == budget
    assert len({e.id for e in responder.received}) == budget
    wait_until(lambda: len(reconciled(subscriber, config.agent_id)) >= budget, "events")
    subscriber.close()
    events = {e.id: e for e in reconciled(subscriber, config.agent_id)}
    assert len(events) == budget
    edge_ids = {e.id for e in subscriber.events(config.agent_id) if e.kind == "anomaly"}
    by_id = {e.id: e for e in responder.received}
    assert {str(e.attributes["escalation_id"]) for e in events.values()} == set(by_id)
    for event in events.values():
        assert event.attributes["agree"] is True
        assert event.attributes["cloud_model_version"] == "2.0.0"
        assert event.model == CLOUD
        answered = by_id[str(event.attributes["escalation_id"])]  # the escalation it answers
        assert event.attributes.get("edge_event_id") == answered.event_id
        assert answered.event_id is None or answered.event_id in edge_ids


def test_every_unsure_input_of_an_incident_is_answered_and_linked(
    broker: Mosquitto, ingest: IngestWorker, agent_config: AgentConfigFactory, tmp_path: Path
) -> None:
    """With budget to spare, the window that starts each incident is escalated too: its
    reconciled event carries the start event's id. The cloud disagrees, and a local action
    that matches disagreements acts on every reconciled event."""
    acted = tmp_path / "disagreements.txt"
    action = {
        "type": "command", "on": ["instant"], "kinds": ["escalation"], "when": "agree == no",
        "argv": ["sh", "-c", f'echo "$AIOT_EVENT_ID" >> {acted}'],
    }  # fmt: skip
    config = escalating(
        agent_config(broker.url, duration_s=25, speed=5), [action],
        band=(0.5, 1.0), budget_per_min=10_000,
    )  # fmt: skip
    subscriber = Subscriber(broker, config.agent_id)
    responder = Responder(broker, disagreeing)
    agent = Agent(config)
    agent.start()
    try:
        wait_until(agent.sources_done, "the source to end")
        wait_until(agent.done, "every event delivered")
    finally:
        agent.stop()
        responder.close()
    final = status(agent)
    assert final.escalations_dropped_budget == 0
    assert final.escalated > 10
    events = subscriber.events(config.agent_id)
    starts = {e.id for e in events if e.kind == "anomaly" and e.state == "start"}
    assert len(starts) == 2
    answers = reconciled(subscriber, config.agent_id)
    linked = {e.attributes.get("edge_event_id") for e in answers}
    assert starts <= linked
    assert {e.attributes["agree"] for e in answers} == {False}
    assert final.escalations_agreed == 0
    assert set(acted.read_text().split()) == {e.id for e in answers}
    subscriber.close()


def waiting_escalations(config: AgentConfig) -> set[str]:
    """The ids of the escalations in the agent's outbox (read beside the running agent)."""
    with closing(sqlite3.connect(config.outbox.path)) as db:
        rows = db.execute("SELECT item_id FROM outbox WHERE kind = 'escalation'").fetchall()
    return {item_id for (item_id,) in rows}


@pytest.mark.slow  # about 30 s: in make test's second phase
def test_escalations_queued_while_the_broker_is_down_are_answered_after_reconnect(
    own_broker: Mosquitto, own_ingest: IngestWorker, agent_config: AgentConfigFactory
) -> None:
    """Offline, ``queue_max`` escalations wait in the outbox and the rest are dropped. After
    the reconnect the queued ones reach the cloud (in whatever order with the new ones), and
    every escalation sent is answered once, counted once, and comes back as one event."""
    queue_max = 4
    config = escalating(
        agent_config(own_broker.url, duration_s=60, speed=2, ack_timeout_s=1.0),
        band=(0.5, 1.0), budget_per_min=10_000, offline="queue", queue_max=queue_max,
    )  # fmt: skip
    subscriber = Subscriber(own_broker, config.agent_id)
    own_broker.stop()
    agent = Agent(config)
    agent.start()
    try:
        wait_until(lambda: status(agent).escalations_dropped_offline > 0, "the queue to fill")
        offline = status(agent)
        assert offline.escalated == offline.escalations_queued == queue_max
        assert offline.escalations_answered == 0
        queued = waiting_escalations(config)
        assert len(queued) == queue_max
        own_broker.start()
        responder = Responder(own_broker, agreeing)
        try:
            wait_until(agent.sources_done, "the source to end")
            wait_until(agent.done, "every escalation answered and every event delivered")
            sent = status(agent).escalated
            wait_until(
                lambda: len({e.id for e in reconciled(subscriber, config.agent_id)}) >= sent,
                "the reconciled events",
            )
        finally:
            responder.close()
    finally:
        agent.stop()
        subscriber.close()
    final = status(agent)
    assert final.escalations_queued == queue_max
    delivered = {e.id for e in responder.received}
    assert queued <= delivered
    assert len(delivered) == final.escalated == final.escalations_answered
    events = {e.id: e for e in reconciled(subscriber, config.agent_id)}
    answered = [str(e.attributes["escalation_id"]) for e in events.values()]
    assert sorted(answered) == sorted(delivered)  # one event for each, none twice
    assert final.escalations_agreed == final.escalations_answered


def test_a_refused_escalation_is_counted_and_emits_nothing(
    broker: Mosquitto, ingest: IngestWorker, agent_config: AgentConfigFactory
) -> None:
    config = escalating(
        agent_config(broker.url, duration_s=20, speed=4), band=(0.5, 1.0), budget_per_min=2
    )
    subscriber = Subscriber(broker, config.agent_id)
    responder = Responder(broker, refusing)
    agent = Agent(config)
    agent.start()
    try:
        wait_until(lambda: status(agent).escalated >= 2, "two escalations")
        wait_until(lambda: status(agent).escalations_refused >= 2, "two refusals")
        wait_until(agent.sources_done, "the source to end")
        wait_until(agent.done, "every event delivered")
        metrics = generate_latest(agent.registry).decode()
    finally:
        agent.stop()
        responder.close()
    final = status(agent)
    assert final.escalations_refused == final.escalated
    assert final.escalations_answered == final.escalations_agreed == 0
    assert agent.escalations is not None
    (escalator,) = [p.escalator for p in agent.pipelines if p.escalator is not None]
    assert escalator.counters.refused == {"no cloud model for pipeline spindle": final.escalated}
    assert reconciled(subscriber, config.agent_id) == []
    refused_metric = 'aiot_edge_pipeline_escalations_refused_total{pipeline="spindle"}'
    assert f"{refused_metric} {float(final.escalated)}" in metrics
    assert any(e.kind == "anomaly" for e in subscriber.events(config.agent_id))
    subscriber.close()
