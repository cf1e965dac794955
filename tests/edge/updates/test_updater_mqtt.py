"""The whole agent with a real Mosquitto: a retained desired state in, status updates out."""

from __future__ import annotations

from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.agent import Agent
from shared.messages import AgentStatus, encode
from shared.topics import Channel, Topic
from tests.edge.test_agent_mqtt import Subscriber, wait_until
from tests.edge.updates.rollout import Rollout
from tests.model_fixtures import write_same_model
from tests.services import Mosquitto

pytestmark = pytest.mark.integration

ORDER = ["downloading", "verifying", "loading", "self_test", "watching", "running"]


def publish_retained(broker: Mosquitto, topic: str, payload: bytes) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    client.publish(topic, payload, qos=1, retain=True).wait_for_publish(timeout=10)
    client.disconnect()
    client.loop_stop()


def update_states(statuses: list[AgentStatus]) -> list[str]:
    """The update states in the order the statuses showed them, repeats folded."""
    states: list[str] = []
    for status in statuses:
        update = status.pipelines[0].update if status.pipelines else None
        if update is not None and (not states or states[-1] != update.state):
            states.append(update.state)
    return states


def test_retained_desired_state_is_installed_and_reported(
    broker: Mosquitto, rollout: Rollout, tmp_path: Path
) -> None:
    config = rollout.config(
        speed=20.0, health_window_s=1.0, mqtt={"url": broker.url, "heartbeat_s": 30}
    )
    entry = rollout.publish("1.1.0", write_same_model(tmp_path / "v110.onnx", "1.1.0"))
    desired_topic = str(Topic(config.agent_id, Channel.DESIRED))
    # Retained before the agent exists: it arrives when the agent subscribes.
    publish_retained(broker, desired_topic, encode(rollout.desired(entry)))
    subscriber = Subscriber(broker, config.agent_id)
    agent = Agent(config)
    try:
        agent.start()

        def reported(state: str) -> bool:
            return state in update_states(subscriber.statuses(config.agent_id))

        wait_until(lambda: reported("running") or reported("failed"), "the update reported")
        states = update_states(subscriber.statuses(config.agent_id))
        assert states[-1] == "running"
        assert "watching" in states
        assert states == [s for s in ORDER if s in states]  # in the order they happened
        final = subscriber.statuses(config.agent_id)[-1].pipelines[0]
        assert final.model is not None
        assert final.model.version == "1.1.0"
        assert final.update is not None
        assert final.update.deployment_id == entry.deployment_id

        # Every event after the swap names the new version, and seqs keep counting.
        wait_until(
            lambda: any(e.model.version == "1.1.0" for e in subscriber.events(config.agent_id)),
            "an event of the new version",
        )
        events = sorted(subscriber.events(config.agent_id), key=lambda e: e.seq)
        versions = [e.model.version for e in events if "closed_by" not in e.attributes]
        switch = versions.index("1.1.0")
        # The retained state can be installed before the first event: then none names 1.0.0.
        assert set(versions[:switch]) <= {"1.0.0"}
        assert set(versions[switch:]) == {"1.1.0"}

        # A message that is not a desired state is refused, and said so in the status.
        publish_retained(broker, desired_topic, b'{"schema": 1, "agent_id": "x"}')
        wait_until(
            lambda: "refused a desired state" in subscriber.statuses(config.agent_id)[-1].reason,
            "the refusal in the status",
        )
        assert agent.pipelines[0].slot.current().ref.version == "1.1.0"
        other = rollout.desired().model_copy(update={"agent_id": "someone-else"})
        publish_retained(broker, desired_topic, encode(other))
        wait_until(
            lambda: "names agent 'someone-else'" in subscriber.statuses(config.agent_id)[-1].reason,
            "the other agent's state refused",
        )
        assert agent.pipelines[0].slot.current().ref.version == "1.1.0"
    finally:
        agent.stop()
        subscriber.close()
        publish_retained(broker, desired_topic, b"")  # leave no retained state behind
