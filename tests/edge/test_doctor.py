"""`aiot edge doctor` finds what keeps an agent from sending, each problem with its fix:
a wrong broker password, a broker certificate from a CA the agent lacks, a disk too small
for the outbox's bound, a tampered model, an unreachable source and a skewed clock; against
a real Mosquitto with passwords and ACLs, the real app, a real pymodbus server."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app as aiot
from cli.modbus_machine import ADDRESSES, CHANNELS, ModbusMachine
from cloud_api.config import Settings
from cloud_api.credentials import enroll_agent
from edge_agent.agent import Agent
from edge_agent.config import AgentConfig, load_config
from edge_agent.doctor import Check, run
from edge_agent.doctor.devices import source_checks
from edge_agent.doctor.live import live_checks
from edge_agent.doctor.network import broker_checks, cloud_checks
from tests.dashboard.conftest import LiveServer, running
from tests.edge.conftest import MODEL
from tests.integration.test_broker_acl import Fleet
from tests.integration.test_broker_acl import fleet as fleet  # the fixture
from tests.services import free_port
from tests.tls.certs import Pki
from tests.tls.conftest import StartBroker
from tests.tls.conftest import pki as pki  # the fixtures
from tests.tls.conftest import tls_broker as tls_broker

pytestmark = pytest.mark.integration

MANIFEST = MODEL.parent / "manifest.json"


def write_config(directory: Path, **sections: Any) -> Path:
    """An agent file: a fast simulated pipeline on the shipped manifest, ``sections`` on top."""
    data: dict[str, Any] = {
        "agent_id": "agent-a",
        "mqtt": {"url": "mqtt://127.0.0.1:1"},
        "outbox": {"path": str(directory / "outbox.db")},
        "pipelines": [
            {
                "name": "spindle",
                "source": {"type": "simulated_vibration", "speed": 0, "duration_s": 5},
                "model": {"name": "vibration-anomaly", "manifest": str(MANIFEST)},
            }
        ],
    }
    data.update(sections)
    path = directory / "edge.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def named(checks: list[Check], name: str) -> Check:
    found = [c for c in checks if c.name == name]
    assert found, f"no check {name!r} in {[c.name for c in checks]}"
    return found[0]


# -- the broker --------------------------------------------------------------------------


def test_a_wrong_broker_password_is_named_with_its_fix(fleet: Fleet, tmp_path: Path) -> None:
    port = fleet.broker.port
    good = load_config(write_config(tmp_path, mqtt={
        "url": f"mqtt://agent-a:{fleet.passwords['agent-a']}@127.0.0.1:{port}"}))  # fmt: skip
    checks = broker_checks(good, timeout_s=5)
    assert [(c.name, c.ok) for c in checks] == [
        ("broker DNS", True), ("broker TCP", True), ("broker login", True), ("broker ACL", True),
    ]  # fmt: skip

    wrong = load_config(
        write_config(tmp_path, mqtt={"url": f"mqtt://agent-a:nope@127.0.0.1:{port}"})
    )
    login = named(broker_checks(wrong, timeout_s=5), "broker login")
    assert login.ok is False
    assert "agent-a" in login.detail
    assert "Not authorized" in login.detail or "Bad user name or password" in login.detail
    assert "password" in login.fix


def test_a_publish_outside_the_acl_is_named(fleet: Fleet, tmp_path: Path) -> None:
    # agent-a's credentials in agent-b's file: the broker refuses agent-b's status topic.
    url = f"mqtt://agent-a:{fleet.passwords['agent-a']}@127.0.0.1:{fleet.broker.port}"
    config = load_config(write_config(tmp_path, agent_id="agent-b", mqtt={"url": url}))
    acl = named(broker_checks(config, timeout_s=5), "broker ACL")
    assert acl.ok is False
    assert "aiot/v1/agents/agent-b/status" in acl.detail
    assert "Not authorized" in acl.detail


def test_a_broker_certificate_from_a_missing_ca_is_named(
    tls_broker: StartBroker, pki: Pki, tmp_path: Path
) -> None:
    broker = tls_broker()
    url = f"mqtts://127.0.0.1:{broker.port}"
    # No ca_file: the system's CAs do not know the test CA.
    plain = load_config(write_config(tmp_path, mqtt={"url": url}))
    lacking = named(broker_checks(plain, timeout_s=5), "broker TLS")
    assert lacking.ok is False
    assert "signed by a CA we do not trust" in lacking.detail
    assert "mqtt.tls.ca_file" in lacking.fix

    # A ca_file that is not there: named by the file check and by the TLS check.
    gone = {"url": url, "tls": {"ca_file": str(tmp_path / "ca.pem")}}
    checks = run(write_config(tmp_path, mqtt=gone), timeout_s=2)
    assert named(checks, "file mqtt.tls.ca_file").ok is False
    assert named(checks, "broker TLS").ok is False
    assert "ca.pem" in named(checks, "broker TLS").detail

    good = {"url": url, "tls": {"ca_file": str(pki.ca)}}
    verified = broker_checks(load_config(write_config(tmp_path, mqtt=good)), timeout_s=5)
    assert [(c.name, c.ok) for c in verified][2:] == [
        ("broker TLS", True), ("broker login", True), ("broker ACL", True),
    ]  # fmt: skip


# -- the gateway -------------------------------------------------------------------------


def test_an_outbox_bound_beyond_the_free_disk_is_named(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    bound = {"path": str(tmp_path / "outbox.db"), "max_bytes": free * 2}
    disk = named(run(write_config(tmp_path, outbox=bound), timeout_s=2), "disk (outbox)")
    assert disk.ok is False
    assert "may grow by" in disk.detail
    assert "outbox.max_bytes" in disk.fix


def test_a_tampered_model_is_named(tmp_path: Path) -> None:
    shutil.copy(MANIFEST, tmp_path / "manifest.json")
    tampered = bytearray(MODEL.read_bytes())
    tampered[-1] ^= 0xFF
    (tmp_path / MODEL.name).write_bytes(bytes(tampered))
    model = {"name": "vibration-anomaly", "manifest": str(tmp_path / "manifest.json")}
    pipeline = {"name": "spindle", "model": model,
                "source": {"type": "simulated_vibration", "speed": 0, "duration_s": 5}}  # fmt: skip
    checks = run(write_config(tmp_path, pipelines=[pipeline]), timeout_s=2)
    found = named(checks, "model spindle")
    assert found.ok is False
    assert "does not match the manifest" in found.detail
    assert named(run(write_config(tmp_path), timeout_s=2), "model spindle").ok is True


def test_a_missing_file_the_config_names_is_named(tmp_path: Path) -> None:
    cloud = {"api_url": "http://127.0.0.1:1", "public_key_file": str(tmp_path / "cloud.pub")}
    found = named(
        run(write_config(tmp_path, cloud=cloud), timeout_s=1), "file cloud.public_key_file"
    )
    assert found.ok is False
    assert "does not exist" in found.detail


# -- sources -----------------------------------------------------------------------------


def modbus_config(tmp_path: Path, port: int) -> AgentConfig:
    channels = {name: {"address": ADDRESSES[name], "data_type": "float32"} for name in CHANNELS}
    source = {"type": "modbus", "host": "127.0.0.1", "port": port, "rate_hz": 20,
              "channels": channels, "timeout_s": 0.5}  # fmt: skip
    pipeline = {"name": "press", "source": source, "window": {"size": 64},
                "model": {"name": "vibration-anomaly", "manifest": str(MANIFEST)}}  # fmt: skip
    return load_config(write_config(tmp_path, pipelines=[pipeline]))


def test_an_unreachable_source_is_named_and_a_reachable_one_passes(tmp_path: Path) -> None:
    nobody = named(source_checks(modbus_config(tmp_path, free_port()), timeout_s=2), "source press")
    assert nobody.ok is False
    assert "cannot connect" in nobody.detail
    assert "reachable" in nobody.fix

    machine = ModbusMachine(free_port())
    machine.start()
    try:
        found = named(
            source_checks(modbus_config(tmp_path, machine.port), timeout_s=10), "source press"
        )
    finally:
        machine.stop()
    assert found.ok is True


# -- the cloud API and the clock ---------------------------------------------------------


@pytest.fixture
def api(tmp_path: Path) -> Iterator[LiveServer]:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'cloud.db'}", ingest_enabled=False,
                        rollout_enabled=False, data_dir=tmp_path)  # fmt: skip
    with running(settings) as server:
        yield server


def cloud_config(tmp_path: Path, api: LiveServer, password: str) -> AgentConfig:
    (tmp_path / "cloud.password").write_text(password)
    cloud = {"api_url": api.url, "username": "agent-a",
             "password_file": str(tmp_path / "cloud.password")}  # fmt: skip
    return load_config(write_config(tmp_path, cloud=cloud))


def test_cloud_credentials_and_clock_skew_are_named(api: LiveServer, tmp_path: Path) -> None:
    with api.session() as session:
        _, password = enroll_agent(session, agent_id="agent-a", labels={})
    config = cloud_config(tmp_path, api, password)
    checks = cloud_checks(config, timeout_s=5)
    assert [(c.name, c.ok) for c in checks] == [
        ("cloud API", True), ("cloud credentials", True), ("clock", True),
    ]  # fmt: skip

    skewed = named(cloud_checks(config, timeout_s=5, clock=lambda: time.time() + 120), "clock")
    assert skewed.ok is False
    assert "ahead of the cloud" in skewed.detail
    assert "NTP" in skewed.fix

    wrong = cloud_config(tmp_path, api, "not-the-password")
    refused = named(cloud_checks(wrong, timeout_s=5), "cloud credentials")
    assert refused.ok is False
    assert "401" in refused.detail


# -- the command ---------------------------------------------------------------------------


def test_the_command_prints_each_check_and_exits_non_zero_on_a_problem(tmp_path: Path) -> None:
    result = CliRunner().invoke(aiot, ["edge", "doctor", "--config", str(write_config(tmp_path)),
                                       "--timeout-s", "1"])  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "✗" in result.output
    assert "broker TCP" in result.output
    assert "start the broker" in result.output
    assert "✓" in result.output
    assert "1 problem(s) found" in result.output


# -- a running agent -----------------------------------------------------------------------


def test_a_running_agent_is_read_from_its_metrics_port(tmp_path: Path) -> None:
    port = free_port()
    config = load_config(write_config(tmp_path, metrics={"port": port}))
    assert named(live_checks(config, timeout_s=2), "live agent").ok is None  # none runs
    agent = Agent(config)
    agent.start()
    try:
        found = named(live_checks(config, timeout_s=5), "live agent")
    finally:
        agent.stop()
    assert found.ok is False  # its broker (port 1) is not there
    assert "not connected to the broker" in found.detail
    assert "items in the outbox" in found.detail


def test_a_secret_others_can_read_is_named(tmp_path: Path) -> None:
    secret = tmp_path / "mqtt.password"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    broker = {"url": "mqtt://agent-a@127.0.0.1:1", "password_file": str(secret)}
    found = named(run(write_config(tmp_path, mqtt=broker), timeout_s=1), "secrets")
    assert found.ok is False
    assert "readable by group or others" in found.detail
    assert "chmod 600" in found.fix
    secret.chmod(0o600)
    checks = run(write_config(tmp_path, mqtt=broker), timeout_s=1)
    assert not [c for c in checks if c.name == "secrets"]
