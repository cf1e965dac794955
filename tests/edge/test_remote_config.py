"""Remote configuration on the agent: what an overlay may change, what it refuses and why,
and a running agent that takes a threshold from the broker without a restart."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from edge_agent.pipelines.base import RunSettings
from edge_agent.pipelines.collect import CollectConfig
from edge_agent.pipelines.filter_config import (
    DebounceFilterConfig,
    FilterStageConfig,
    ThresholdFilterConfig,
)
from edge_agent.pipelines.filters import build_engine
from edge_agent.remote_config import RefusedError, RemoteConfig, resolve
from shared.messages import AgentStatus, ConfigOverlay, encode, utcnow
from shared.topics import Channel, Topic
from tests.edge.conftest import AgentConfigFactory
from tests.edge.test_agent_mqtt import Subscriber, wait_until
from tests.services import Mosquitto

FILTERS: list[FilterStageConfig] = [
    ThresholdFilterConfig(type="threshold", threshold=2.0),  # scores are <= 1: never on
    DebounceFilterConfig(type="debounce", n=3, m=4),
]


def with_filters(config: AgentConfig, **pipeline: Any) -> AgentConfig:
    """``config`` whose one pipeline never fires (threshold 2.0), plus ``pipeline`` changes."""
    first = config.pipelines[0].model_copy(update={"filters": FILTERS, **pipeline})
    return config.model_copy(update={"pipelines": [first]})


@pytest.fixture
def quiet_agent(agent_config: AgentConfigFactory) -> Iterator[Agent]:
    """An agent built (not started) on a config whose pipeline never fires."""
    agent = Agent(with_filters(agent_config()))
    yield agent
    agent.stop()


def settings_of(agent: Agent, overlay: dict[str, Any]) -> RunSettings:
    configs = {p.name: p for p in agent.config.pipelines}
    pipelines = {p.name: p for p in agent.pipelines}
    settings, _ = resolve(overlay, configs, pipelines)
    return settings["spindle"]


def started(agent: Agent) -> Agent:
    agent.start()
    return agent


# -- what an overlay may change --------------------------------------------------------------


def test_a_threshold_and_debounce_overlay_patches_the_configured_chain(
    quiet_agent: Agent,
) -> None:
    started(quiet_agent)
    overlay = {
        "pipelines": {
            "spindle": {
                "filters": {"threshold": {"threshold": 0.5}, "debounce": {"n": 2, "m": 3}},
                "summary_interval_s": 30,
            }
        }
    }
    settings = settings_of(quiet_agent, overlay)
    assert settings.filters == (
        ThresholdFilterConfig(type="threshold", threshold=0.5),
        DebounceFilterConfig(type="debounce", n=2, m=3),
    )
    assert settings.summary_interval_s == 30
    # A key left out takes the file's value again.
    assert settings_of(quiet_agent, {}) == quiet_agent.pipelines[0].configured


def test_a_collect_overlay_patches_the_file_and_null_turns_it_off(
    agent_config: AgentConfigFactory,
) -> None:
    collect = CollectConfig(random_share=0.01, max_per_minute=5)
    agent = started(Agent(with_filters(agent_config(), collect=collect)))
    try:
        overlay = {"pipelines": {"spindle": {"collect": {"random_share": 0.5}}}}
        settings = settings_of(agent, overlay)
        assert settings.collect == CollectConfig(random_share=0.5, max_per_minute=5)
        assert settings_of(agent, {"pipelines": {"spindle": {"collect": None}}}).collect is None
        with pytest.raises(RefusedError, match=r"collect\.random_share"):
            settings_of(agent, {"pipelines": {"spindle": {"collect": {"random_share": 2}}}})
    finally:
        agent.stop()


@pytest.mark.parametrize(
    ("overlay", "reason"),
    [
        ({"mqtt": {"url": "mqtt://evil:1883"}}, "mqtt cannot change at run time"),
        ({"cloud": {}}, "cloud cannot change at run time"),
        ({"pipelines": {"spindle": {"source": {}}}}, "pipelines.spindle.source cannot change"),
        ({"pipelines": {"spindle": {"model": {}}}}, "pipelines.spindle.model cannot change"),
        ({"pipelines": {"spindle": {"colour": 1}}}, "pipelines.spindle.colour: unknown key"),
        ({"pipelines": {"lathe": {}}}, "this agent has no pipeline 'lathe'"),
        ({"log_level": "LOUD"}, "log_level: expected one of"),
        (
            {"pipelines": {"spindle": {"filters": {"debounce": {"n": 5, "m": 3}}}}},
            "pipelines.spindle.filters[1].debounce: Value error, need m/2 < n <= m",
        ),
        (
            {"pipelines": {"spindle": {"filters": {"threshold": {"threshold": "high"}}}}},
            "spindle.filters[0].threshold.threshold: Input should be a valid number, unable",
        ),
        (
            {"pipelines": {"spindle": {"filters": {"dedup": {"window_s": 1}}}}},
            "filters.dedup: the chain has no such stage",
        ),
        (
            {"pipelines": {"spindle": {"summary_interval_s": 0.01}}},
            "pipelines.spindle.summary_interval_s: Value error, expected 0 (off) or at least",
        ),
    ],
)
def test_an_overlay_outside_the_schema_is_refused_by_name(
    quiet_agent: Agent, overlay: dict[str, Any], reason: str
) -> None:
    started(quiet_agent)
    with pytest.raises(RefusedError) as refused:
        settings_of(quiet_agent, overlay)
    assert reason in str(refused.value)


# -- the engine keeps its incidents across new settings ---------------------------------------


def test_new_filter_settings_keep_an_open_event_open() -> None:
    engine = build_engine([*FILTERS[:1], DebounceFilterConfig(type="debounce", n=2, m=3)])
    lowered = engine.retuned([ThresholdFilterConfig(type="threshold", threshold=0.5), FILTERS[1]])
    assert [lowered.step(float(t), t, 0.9, "x") for t in range(2)] == [None, None]
    start = lowered.step(2.0, 2, 0.9, "x")
    assert start is not None
    assert start.state == "start"
    # Raised again while the incident is open: it stays open, then ends on the new level.
    raised = lowered.retuned([ThresholdFilterConfig(type="threshold", threshold=0.95), FILTERS[1]])
    assert raised.active()
    states = [d.state for t in range(3, 8) if (d := raised.step(float(t), t, 0.9, "x"))]
    assert states == ["end"]


# -- the agent: applied between samples, refused with the reason, persisted --------------------


def publish_overlay(broker: Mosquitto, message: ConfigOverlay | bytes) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    payload = message if isinstance(message, bytes) else encode(message)
    topic = str(Topic(json.loads(payload)["agent_id"], Channel.CONFIG))
    client.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


def overlay(agent_id: str, version: int, body: dict[str, Any]) -> ConfigOverlay:
    return ConfigOverlay(agent_id=agent_id, version=version, issued_at=utcnow(), overlay=body)


def last_config(subscriber: Subscriber, agent_id: str) -> AgentStatus | None:
    statuses = [s for s in subscriber.statuses(agent_id) if s.config is not None]
    return statuses[-1] if statuses else None


def reported(subscriber: Subscriber, agent_id: str) -> tuple[int | None, int | None, str]:
    """(desired, applied, refused) of the last status on the wire that has a config."""
    last = last_config(subscriber, agent_id)
    if last is None or last.config is None:
        return (None, None, "")
    return (last.config.desired_version, last.config.applied_version, last.config.refused)


LOWER = {"pipelines": {"spindle": {"filters": {"threshold": {"threshold": 0.5}}}}}


@pytest.mark.integration
@pytest.mark.slow  # about 15 s: in make test's second phase
def test_a_threshold_changed_remotely_takes_effect_without_a_restart(
    broker: Mosquitto, agent_config: AgentConfigFactory, tmp_path: Path
) -> None:
    schedule = [{"at_s": 10 * i + 5, "duration_s": 5, "fault": "imbalance"} for i in range(360)]
    config = with_filters(agent_config(broker.url, duration_s=3600, speed=5, schedule=schedule))
    agent_id = config.agent_id
    subscriber = Subscriber(broker, agent_id)
    agent = started(Agent(config))
    try:
        # Faults come every 10 s of machine time; with the file's threshold none is an event.
        wait_until(lambda: agent.pipelines[0].counters.samples_in >= 200, "200 windows")
        assert agent.pipelines[0].counters.events_out == 0
        publish_overlay(broker, overlay(agent_id, 1, LOWER))
        wait_until(lambda: agent.pipelines[0].counters.events_out >= 2, "events on 0.5")
        wait_until(lambda: reported(subscriber, agent_id) == (1, 1, ""), "version 1 reported")
        status = agent.status().config
        assert status is not None
        assert status.applied == LOWER

        # An invalid overlay changes nothing and says why, in the status on the wire.
        bad = {"pipelines": {"spindle": {"filters": {"debounce": {"n": 9, "m": 4}}}}}
        publish_overlay(broker, overlay(agent_id, 2, bad))

        wait_until(lambda: reported(subscriber, agent_id)[0] == 2, "version 2 reported")
        last = last_config(subscriber, agent_id)
        assert last is not None
        assert last.config is not None
        assert last.config.applied_version == 1
        assert "need m/2 < n <= m" in last.config.refused
        assert last.config.applied == LOWER
    finally:
        agent.stop()
        subscriber.close()
        publish_overlay_clear(broker, agent_id)

    # The cloud is gone (nothing listens on port 1): the applied overlay comes from disk.
    offline = config.model_copy(update={"mqtt": agent_config().mqtt})
    again = started(Agent(offline))
    try:
        status = again.status().config
        assert status is not None
        assert status.applied_version == 1
        wait_until(lambda: again.pipelines[0].counters.events_out >= 2, "events on 0.5 offline")
    finally:
        again.stop()


def publish_overlay_clear(broker: Mosquitto, agent_id: str) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    topic = str(Topic(agent_id, Channel.CONFIG))
    client.publish(topic, b"", qos=1, retain=True).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


def test_a_message_for_another_agent_or_not_json_is_refused(quiet_agent: Agent) -> None:
    started(quiet_agent)
    remote = quiet_agent.remote_config
    assert remote is not None
    remote.submit(b"{not json")
    assert remote.status().refused.startswith("invalid config message")
    remote.submit(encode(overlay("someone-else", 3, LOWER)))
    assert "names agent 'someone-else'" in remote.status().refused
    assert remote.status().applied_version is None


def test_an_overlay_older_than_the_one_in_effect_is_skipped(quiet_agent: Agent) -> None:
    """A late redelivery of an older retained message does not undo a newer overlay; a lower
    version issued later (a cloud whose database counts again from 1) is taken."""
    started(quiet_agent)
    remote = quiet_agent.remote_config
    assert remote is not None
    agent_id = quiet_agent.config.agent_id
    old = overlay(agent_id, 4, {"log_level": "WARNING"})
    new = overlay(agent_id, 5, LOWER)
    remote.submit(encode(new))
    remote.submit(encode(old))
    assert (remote.status().applied_version, remote.status().applied) == (5, LOWER)
    rebuilt = ConfigOverlay(
        agent_id=agent_id, version=1, issued_at=new.issued_at + timedelta(seconds=1), overlay={}
    )
    remote.submit(encode(rebuilt))
    assert (remote.status().applied_version, remote.status().applied) == (1, {})


def test_log_level_follows_the_overlay_and_returns_to_the_file(
    quiet_agent: Agent, agent_config: AgentConfigFactory
) -> None:
    started(quiet_agent)
    remote = quiet_agent.remote_config
    assert isinstance(remote, RemoteConfig)
    root = logging.getLogger()
    before = root.level
    agent_id = quiet_agent.config.agent_id
    remote.submit(encode(overlay(agent_id, 1, {"log_level": "ERROR"})))
    assert root.level == logging.ERROR
    remote.submit(encode(overlay(agent_id, 2, {})))
    assert root.level == before
