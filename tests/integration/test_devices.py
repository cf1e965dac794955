"""Real devices in, events in SQL out: a press behind Modbus TCP (pymodbus), MQTT
(Mosquitto) or OPC UA (asyncua), read by the agent as a process (`aiot edge run`), windows
of three channels scored by a model learnt from the press's normal (`fit-normal`), events
through a real Mosquitto into the cloud.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cli.broker import free_port
from cli.modbus_machine import ADDRESSES, CHANNELS, ModbusMachine, normal_readings
from models.normal import fit_normal
from models.normal_files import write_model
from models.window_features import WindowSpec
from tests.integration.conftest import AgentProcess, all_events, cloud_client, wait_until
from tests.integration.press_servers import MqttPress, OpcuaPress
from tests.services import Mosquitto

pytestmark = pytest.mark.integration

RATE_HZ = 20.0
WINDOW = 40  # 2 s: four press strokes
HOP = 20


def press_model(directory: Path) -> Path:
    """The press's normal, learnt offline from the same physics (what `fit-normal` does)."""
    spec = WindowSpec(CHANNELS, size=WINDOW, hop=HOP, rate_hz=RATE_HZ)
    result = fit_normal(normal_readings(600, RATE_HZ), spec, name="press-normal", version="1.0.0")
    write_model(result, directory)
    return directory / "manifest.json"


def modbus_source(press: ModbusMachine) -> str:
    channels = "".join(
        f"        {name}: {{address: {ADDRESSES[name]}, data_type: float32}}\n" for name in CHANNELS
    )
    return (
        f"      type: modbus\n      host: 127.0.0.1\n      port: {press.port}\n"
        f"      rate_hz: {RATE_HZ}\n      channels:\n{channels}"
    )


def mqtt_source(broker: Mosquitto, press: MqttPress) -> str:
    channels = ", ".join(f"{name}: values.{name}" for name in CHANNELS)
    return (
        f"      type: mqtt\n      url: '{broker.url}'\n      topic: {press.topic}\n"
        f"      channels: {{{channels}}}\n      timestamp: ts\n"
    )


def opcua_source(press: OpcuaPress) -> str:
    channels = ", ".join(f'{name}: "{node}"' for name, node in press.node_ids.items())
    return (
        f"      type: opcua\n      endpoint: {press.endpoint}\n"
        f"      channels: {{{channels}}}\n      sampling_interval_ms: 50\n"
        "      timestamps: source\n"
    )


def press_agent_yaml(agent_id: str, broker: Mosquitto, source: str, workdir: Path) -> Path:
    path = workdir / f"{agent_id}.yaml"
    path.write_text(
        f"agent_id: {agent_id}\n"
        f"mqtt: {{url: '{broker.url}', heartbeat_s: 1}}\n"
        f"outbox: {{path: '{workdir / 'outbox.db'}'}}\n"
        "pipelines:\n"
        "  - name: press\n"
        "    source:\n"
        f"{source}"
        f"    window: {{size: {WINDOW}, hop: {HOP}, rate_hz: {RATE_HZ}}}\n"
        f"    model: {{name: press-normal, manifest: '{press_model(workdir / 'models')}'}}\n"
    )
    return path


@pytest.fixture(
    params=[
        "modbus",
        pytest.param("mqtt", marks=pytest.mark.slow),  # same path, another protocol: phase 2
        pytest.param("opcua", marks=pytest.mark.slow),
    ]
)
def press(request: pytest.FixtureRequest, broker: Mosquitto) -> Iterator[tuple[Any, str]]:
    """The press behind one protocol, and the agent's source section for it."""
    machine: Any
    if request.param == "modbus":
        machine = ModbusMachine(free_port())
        machine.start()
        source = modbus_source(machine)
    elif request.param == "mqtt":
        machine = MqttPress("127.0.0.1", broker.port, f"plant/press-{uuid.uuid4().hex[:6]}")
        machine.start()
        source = mqtt_source(broker, machine)
    else:
        machine = OpcuaPress(free_port())
        machine.start()
        source = opcua_source(machine)
    yield machine, source
    machine.stop()


@pytest.mark.slow  # about 30 s: in make test's second phase
def test_a_press_fault_becomes_one_incident_in_the_cloud(
    broker: Mosquitto,
    press: tuple[Any, str],
    agents: Callable[[Path], AgentProcess],
    tmp_path: Path,
) -> None:
    machine, source = press
    agent_id = f"press-{uuid.uuid4().hex[:8]}"
    config = press_agent_yaml(agent_id, broker, source, tmp_path)
    with cloud_client(f"sqlite:///{tmp_path / 'cloud.db'}", broker, tmp_path) as client:
        agents(config)

        def windows_scored() -> bool:
            response = client.get(f"/api/v1/agents/{agent_id}")
            pipelines = response.json().get("pipelines") or [{}] if response.is_success else [{}]
            return int(pipelines[0].get("samples_in", 0)) >= 20

        wait_until(windows_scored, 60, "the agent to score 20 windows of the healthy press")
        assert all_events(client, agent_id=agent_id) == []
        machine.forced_fault = True
        wait_until(
            lambda: any(e["state"] == "start" for e in all_events(client, agent_id=agent_id)),
            30,
            "the fault to start an incident",
        )
        machine.forced_fault = False
        wait_until(
            lambda: any(e["state"] == "end" for e in all_events(client, agent_id=agent_id)),
            30,
            "the incident to end once the press is healthy again",
        )
        events = all_events(client, agent_id=agent_id)
    states = [e["state"] for e in sorted(events, key=lambda e: e["ts"])]
    assert states[0] == "start"
    assert states[-1] == "end"
    assert states.count("start") == 1
    start = next(e for e in events if e["state"] == "start")
    assert start["label"] == "anomaly"
    assert start["model_name"] == "press-normal"
    assert {f"{name}_mean" for name in CHANNELS} <= set(start["attributes"])
