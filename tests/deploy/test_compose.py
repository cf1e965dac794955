"""The compose stack is a valid compose file (validated by the docker client; no engine here)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "compose.yml"


def compose_command() -> list[str] | None:
    """`docker compose` (plugin) when present, else Debian's `docker-compose` v1."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.mark.parametrize("profile", [[], ["--profile", "scale"]], ids=["default", "scale"])
def test_compose_file_validates(profile: list[str]) -> None:
    command = compose_command()
    if command is None:
        pytest.skip("no docker compose client on this machine (make test installs docker-compose)")
    result = subprocess.run(
        [*command, "-f", str(COMPOSE), *profile, "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_compose_stack_has_the_whole_platform() -> None:
    import yaml

    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert {"mosquitto", "postgres", "api", "edge"} <= set(services)
    edge_config = COMPOSE.parent / services["edge"]["volumes"][0].split(":")[0]
    assert edge_config.exists(), f"{edge_config} is mounted into the edge container"


def test_scale_profile_adds_two_ingest_workers_on_the_share_group() -> None:
    import yaml

    services = yaml.safe_load(COMPOSE.read_text())["services"]
    scale = {name: spec for name, spec in services.items() if "scale" in spec.get("profiles", [])}
    assert len(scale) == 2
    client_ids = set()
    for spec in scale.values():
        command = spec["command"]
        assert command[:2] == ["cloud", "ingest"]
        assert command[command.index("--share-group") + 1] == "ingest"
        client_ids.add(command[command.index("--client-id") + 1])
    api_env = services["api"]["environment"]
    assert api_env["AIOT_INGEST_SHARE_GROUP"] == "ingest", "the API's own worker shares too"
    client_ids.add(api_env["AIOT_INGEST_CLIENT_ID"])
    assert len(client_ids) == 3, "every ingest worker needs its own client id"
    assert all("profiles" not in services[name] for name in ("mosquitto", "postgres", "api"))


def test_broker_authenticates_from_the_files_broker_init_writes() -> None:
    import yaml

    services = yaml.safe_load(COMPOSE.read_text())["services"]
    init, broker = services["broker-init"], services["mosquitto"]
    assert broker["depends_on"]["broker-init"] == {"condition": "service_completed_successfully"}
    shared = {volume.split(":")[0] for volume in init["volumes"]}
    assert any(v.split(":")[:2] == ["broker-auth", "/mosquitto/auth"] for v in broker["volumes"])
    assert "broker-auth" in shared
    script = COMPOSE.parent / "mosquitto" / "init.sh"
    assert f"./mosquitto/{script.name}" in shared
    commands = script.read_text()
    for command in ("create-broker-user ingest", "create-broker-user control", "broker-config"):
        assert f"aiot cloud {command}" in commands
    conf = (COMPOSE.parent / "mosquitto" / "mosquitto.conf").read_text()
    assert "include_dir /mosquitto/auth" in conf
    assert "allow_anonymous true" not in conf
    api_env = services["api"]["environment"]
    assert api_env["AIOT_MQTT_URL"].startswith("mqtt://ingest:")
    assert api_env["AIOT_MQTT_CONTROL_URL"].startswith("mqtt://control:")


def test_compose_agent_follows_rollouts_with_its_own_credentials(tmp_path: Path) -> None:
    """The edge service's config has `cloud:` and `updates:`; the files it names are made."""
    import yaml

    from edge_agent.config import load_config

    services = yaml.safe_load(COMPOSE.read_text())["services"]
    edge, init, api = services["edge"], services["broker-init"], services["api"]
    config = tmp_path / "edge.yaml"
    config.write_text((COMPOSE.parent / "edge.compose.yaml").read_text())
    agent = load_config(config)
    cloud = agent.cloud
    assert cloud is not None
    assert cloud.api_url == "http://api:8000"
    assert cloud.username == agent.agent_id == agent.mqtt.username
    # The password comes from the service's environment; no file holds it.
    assert cloud.password_env == agent.mqtt.password_env == "AIOT_EDGE_PASSWORD"
    assert "AIOT_EDGE_PASSWORD" in edge["environment"]
    assert agent.mqtt.broker.password is None
    assert edge["command"] == ["edge", "run", "--config", "/etc/aiot/edge.yaml"]
    # The public key is written by broker-init into a volume the edge mounts.
    assert cloud.public_key_file is not None
    trust = next(v for v in edge["volumes"] if v.startswith("edge-trust:"))
    mount = trust.split(":")[1]
    assert cloud.public_key_file.parent.as_posix() == mount
    init_mount = next(v for v in init["volumes"] if v.startswith("edge-trust:")).split(":")[1]
    script = (COMPOSE.parent / "mosquitto" / "init.sh").read_text()
    assert f"> {init_mount}/{cloud.public_key_file.name}" in script
    # broker-init makes the signing key in the API's data volume before the API starts.
    assert f"api-data:{api['environment']['AIOT_DATA_DIR']}" in api["volumes"]
    assert any(v.startswith("api-data:") for v in init["volumes"])
    assert api["depends_on"]["broker-init"] == {"condition": "service_completed_successfully"}
    assert agent.updates_dir.as_posix().startswith("/data/")
    assert "edge-data:/data" in edge["volumes"]
