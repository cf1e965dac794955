"""Config loading: a wrong key is reported with its path, file and line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from edge_agent.config import AgentConfig, load_config
from shared.errors import ConfigError
from tests.edge.conftest import MODEL, REPO

VALID = textwrap.dedent(
    """\
    agent_id: press-3
    mqtt:
      url: mqtt://user:s%40cret@broker.local:1884
      protocol: 3.1.1
    outbox:
      path: data/outbox.db
    pipelines:
      - name: spindle
        source:
          type: simulated_vibration
          seed: 1
          schedule:
            - {at_s: 1, duration_s: 2, fault: imbalance}
        model:
          name: vibration-anomaly
          manifest: manifest.json
    """
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return path


def test_valid_config_loads_with_defaults_and_resolves_paths(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID))
    assert config.mqtt.host == "broker.local"
    assert config.mqtt.port == 1884
    assert config.mqtt.endpoint().username == "user"
    assert config.mqtt.endpoint().password == "s@cret"
    assert config.mqtt.protocol == "3.1.1"
    assert config.client_id == "aiot-edge-press-3"
    assert config.outbox.path == tmp_path / "data" / "outbox.db"
    pipeline = config.pipelines[0]
    assert pipeline.model.manifest == tmp_path / "manifest.json"
    assert [s.type for s in pipeline.filters] == ["threshold", "debounce"]
    assert pipeline.actions == []
    assert pipeline.runtime.intra_op_threads == 1


def test_protocol_5_may_be_written_as_a_number(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID.replace("protocol: 3.1.1", "protocol: 5")))
    assert config.mqtt.protocol == "5"


def test_shipped_example_is_valid() -> None:
    config = load_config(REPO / "deploy" / "edge.example.yaml")
    assert config.pipelines[0].model.path == MODEL


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    return str(info.value)


def test_unknown_key_names_key_file_and_line(tmp_path: Path) -> None:
    text = VALID.replace("      seed: 1\n", "      seed: 1\n      sede: 2\n")
    message = error_of(tmp_path, text)
    assert "sede" in message
    assert "agent.yaml:12" in message
    assert "pipelines[0].source.sede" in message
    assert "unknown key" in message


def test_wrong_value_in_a_list_names_its_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, VALID.replace("fault: imbalance", "fault: wobble"))
    assert "agent.yaml:13" in message
    assert "pipelines[0].source.schedule[0].fault" in message
    assert "wobble" in message


def test_unknown_source_type_is_an_error(tmp_path: Path) -> None:
    message = error_of(tmp_path, VALID.replace("simulated_vibration", "thermometer"))
    assert "agent.yaml:10" in message
    assert "thermometer" in message


def test_missing_key_points_at_its_parent(tmp_path: Path) -> None:
    message = error_of(tmp_path, VALID.replace("  - name: spindle\n", "  - \n"))
    assert "pipelines[0].name" in message
    assert "Field required" in message


def test_bad_url_and_bad_debounce_are_explained(tmp_path: Path) -> None:
    text = VALID.replace("mqtt://user:s%40cret@broker.local:1884", "http://broker") + (
        "    filters:\n"
        "      - {type: threshold, threshold: 0.8}\n"
        "      - {type: debounce, n: 2, m: 4}\n"
    )
    message = error_of(tmp_path, text)
    assert "agent.yaml:3: mqtt.url" in message
    assert "mqtt://" in message
    assert "agent.yaml:19: pipelines[0].filters[1]: Value error" in message
    assert "m/2 < n <= m" in message


def test_heartbeat_is_at_most_what_the_status_message_accepts(tmp_path: Path) -> None:
    """A status with a longer heartbeat would be refused by the wire contract (one day)."""
    text = VALID.replace("  protocol: 3.1.1\n", "  protocol: 3.1.1\n  heartbeat_s: 86401\n")
    assert "mqtt.heartbeat_s" in error_of(tmp_path, text)


FILTERS_AND_ACTIONS = """\
    filters:
      - {type: hysteresis, on: 0.8, off: 0.6}
      - type: debounce
        n: 2
        m: 3
      - {type: report_interval, min_s: 1, max_s: 30}
      - {type: rate_limit, per_s: 0.5, burst: 3}
      - {type: dedup, window_s: 60}
    actions:
      - {type: mqtt, url: "mqtt://127.0.0.1:1883", topic: plant/siren, on: [start, end]}
      - {type: webhook, url: "http://127.0.0.1:8080/hook", labels: [impact], timeout_s: 1}
      - type: command
        argv: [/usr/bin/logger, -t, aiot]
"""


def test_filters_and_actions_load_with_yaml_on_and_off_as_keys(tmp_path: Path) -> None:
    pipeline = load_config(write(tmp_path, VALID + FILTERS_AND_ACTIONS)).pipelines[0]
    level, debounce, interval, limit, dedup = (s.model_dump() for s in pipeline.filters)
    assert level == {"type": "hysteresis", "on": 0.8, "off": 0.6}
    assert debounce == {"type": "debounce", "n": 2, "m": 3}
    assert interval == {"type": "report_interval", "min_s": 1.0, "max_s": 30.0}
    assert (limit["per_s"], limit["burst"], dedup["window_s"]) == (0.5, 3, 60.0)
    mqtt, webhook, command = (a.model_dump() for a in pipeline.actions)
    assert (mqtt["on"], mqtt["qos"], mqtt["labels"]) == (["start", "end"], 1, None)
    assert (webhook["on"], webhook["labels"], webhook["timeout_s"]) == (["start"], ["impact"], 1)
    assert command["argv"] == ["/usr/bin/logger", "-t", "aiot"]


def test_unknown_filter_type_and_key_name_their_lines(tmp_path: Path) -> None:
    text = VALID + FILTERS_AND_ACTIONS.replace("type: dedup", "type: dedupe").replace(
        "n: 2\n", "n: 2\n        window: 3\n"
    )
    message = error_of(tmp_path, text)
    assert "agent.yaml:21: pipelines[0].filters[1].window: unknown key" in message
    assert "agent.yaml:25: pipelines[0].filters[4].type" in message
    assert "dedupe" in message


def test_action_errors_name_their_lines(tmp_path: Path) -> None:
    text = VALID + FILTERS_AND_ACTIONS.replace("http://127", "ftp://127").replace(
        "on: [start, end]", "on: [begin]"
    )
    message = error_of(tmp_path, text)
    assert "agent.yaml:26: pipelines[0].actions[0].on[0]" in message
    assert "agent.yaml:27: pipelines[0].actions[1].url: Value error, expected http(s)" in message


def test_model_needs_path_or_manifest_not_both(tmp_path: Path) -> None:
    message = error_of(tmp_path, VALID.replace("manifest: manifest.json", "version: 1.0.0"))
    assert "either `path`" in message


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    message = error_of(tmp_path, VALID.replace("agent_id: press-3\n", "agent_id: a\nagent_id: b\n"))
    assert "agent.yaml:2" in message
    assert "duplicate key 'agent_id'" in message


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, VALID.replace("  protocol: 3.1.1", "  protocol: [3.1.1"))
    assert "agent.yaml:" in message
    assert "invalid YAML" in message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


def test_duplicate_pipeline_names_are_rejected() -> None:
    pipeline = {
        "name": "p",
        "source": {"type": "simulated_vibration"},
        "model": {"name": "m", "manifest": "x.json"},
    }
    with pytest.raises(ValueError, match="unique"):
        AgentConfig.model_validate({"agent_id": "a", "pipelines": [pipeline, pipeline]})


def test_compose_config_is_valid_and_points_inside_the_container() -> None:
    config = load_config(REPO / "deploy" / "edge.compose.yaml")
    assert config.mqtt.host == "mosquitto"
    assert config.outbox.path == Path("/data/outbox.db")
    assert config.pipelines[0].model.manifest == Path("/app/models/manifest.json")
    assert (REPO / "models" / "manifest.json").exists()  # what the image copies to /app/models


CLOUD = textwrap.dedent(
    """\
    cloud:
      api_url: http://cloud.local:8000/
      public_key_file: keys/cloud.pub
      username: press-3
      password_file: secrets/password
    updates:
      health_window_s: 10
      keep_versions: 2
    """
)


def test_cloud_and_updates_sections_resolve_paths_and_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID + CLOUD))
    assert config.cloud is not None
    assert config.cloud.base_url == "http://cloud.local:8000"
    assert config.cloud.public_key_file == tmp_path / "keys" / "cloud.pub"
    assert config.cloud.password_file == tmp_path / "secrets" / "password"
    assert config.updates.health_window_s == 10
    assert config.updates.retries == 5
    assert config.updates_dir == tmp_path / "data" / "models"


def test_without_cloud_section_there_is_no_cloud(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, VALID)).cloud is None


def test_unknown_cloud_key_names_key_and_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, VALID + CLOUD.replace("  username:", "  user_name:"))
    assert "agent.yaml:20: cloud.user_name: unknown key" in message


def test_username_needs_a_password_file(tmp_path: Path) -> None:
    text = VALID + CLOUD.replace("  password_file: secrets/password\n", "")
    assert "give username with password_file or password_env" in error_of(tmp_path, text)


def test_api_url_must_be_http(tmp_path: Path) -> None:
    message = error_of(tmp_path, VALID + CLOUD.replace("http://cloud", "ftp://cloud"))
    assert "cloud.api_url" in message
    assert "expected http(s)://" in message


def test_example_cloud_section_is_valid_once_uncommented(tmp_path: Path) -> None:
    text = (REPO / "deploy" / "edge.example.yaml").read_text()
    block = text.split("# cloud:\n", 1)[1].split("updates:", 1)[0]
    cloud = "cloud:\n" + "".join(line.removeprefix("#") + "\n" for line in block.splitlines())
    example = tmp_path / "deploy" / "edge.yaml"
    example.parent.mkdir()
    example.write_text(text.replace("# cloud:\n" + block, cloud))
    config = load_config(example)
    assert config.cloud is not None
    assert config.cloud.public_key_file == tmp_path / "data" / "cloud" / "signing-key.pub"
    assert config.updates.keep_versions == 3


def test_example_device_pipelines_are_valid_once_uncommented(tmp_path: Path) -> None:
    text = (REPO / "deploy" / "edge.example.yaml").read_text()
    _, block = text.split("# The blocks below are valid once uncommented", 1)
    lines = block.split("\n")[1:]
    devices = "".join(line.removeprefix("#") + "\n" for line in lines if line.startswith("#"))
    example = tmp_path / "deploy" / "edge.yaml"
    example.parent.mkdir()
    example.write_text(text + devices)
    config = load_config(example)
    kinds = {p.name: p.source.type for p in config.pipelines}
    assert {"press": "modbus", "boiler": "opcua", "hall-climate": "mqtt"}.items() <= kinds.items()
    assert kinds["line-replay"] == "csv"
    camera = next(p for p in config.pipelines if p.name == "gate-camera")
    assert (camera.privacy.images, camera.privacy.blur, camera.keeps_thumbnails) == (
        "crops", ["person"], True,
    )  # fmt: skip
    assert config.pipelines[0].collect is not None
    assert config.pipelines[0].privacy.images == "never"
