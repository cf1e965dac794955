"""The Kubernetes manifests parse and describe the scale-out (no cluster here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent.config import load_config

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
MANIFESTS = sorted(K8S.glob("*.yaml"))


def documents() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def find(kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}"
    return matches[0]


@pytest.mark.parametrize("path", MANIFESTS, ids=[path.name for path in MANIFESTS])
def test_every_manifest_is_yaml_with_kind_and_name(path: Path) -> None:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert docs
    for doc in docs:
        assert isinstance(doc.get("apiVersion"), str)
        assert doc["apiVersion"]
        assert isinstance(doc.get("kind"), str)
        assert doc["kind"]
        assert doc["metadata"]["name"]
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "aiot"


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_api_runs_two_stateless_replicas_ready_on_healthz() -> None:
    api = find("Deployment", "aiot-api")
    assert api["spec"]["replicas"] == 2
    main = container(api)
    assert "--no-ingest" in main["args"]
    assert main["readinessProbe"]["httpGet"]["path"] == "/healthz"
    service = find("Service", "aiot-api")
    assert service["spec"]["selector"] == api["spec"]["selector"]["matchLabels"]


def test_ingest_runs_three_replicas_on_the_shared_subscription() -> None:
    ingest = find("StatefulSet", "aiot-ingest")
    assert ingest["spec"]["replicas"] == 3
    args = container(ingest)["args"]
    assert args[:2] == ["cloud", "ingest"]
    assert args[args.index("--share-group") + 1] == "ingest"
    assert args[args.index("--client-id") + 1] == "$(POD_NAME)", "a unique, stable client id"


def test_database_and_broker_are_external_settings() -> None:
    config = find("ConfigMap", "aiot-cloud")["data"]
    secret = find("Secret", "aiot-cloud-db")["stringData"]
    assert config["AIOT_MQTT_URL"].startswith("mqtt://")
    assert secret["AIOT_DATABASE_URL"].startswith("postgresql")
    kinds = {(d["kind"], d["metadata"]["name"]) for d in documents()}
    assert not any("postgres" in name or "mosquitto" in name for _, name in kinds)


def test_edge_agent_config_from_its_configmap_is_valid(tmp_path: Path) -> None:
    edge = find("Deployment", "aiot-edge")
    assert container(edge)["args"] == ["edge", "run", "--config", "/etc/aiot/edge.yaml"]
    config = tmp_path / "edge.yaml"
    config.write_text(find("ConfigMap", "aiot-edge")["data"]["edge.yaml"])
    agent = load_config(config)
    assert agent.agent_id == "k8s-edge-1"
