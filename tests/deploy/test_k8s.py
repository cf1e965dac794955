"""The Kubernetes manifests parse, describe the scale-out and fit the product (no cluster here):
every setting is a real ``Settings`` field, every Secret referenced exists, the agent's config
validates, and the setup Job's script does what it says against a real database."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from cloud_api.config import Settings, load_settings
from cloud_api.passwords import verify_mosquitto_hash
from cloud_api.registry import SIGNING_KEY_FILE
from edge_agent.config import load_config

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
MANIFESTS = sorted([*K8S.glob("*.yaml"), *K8S.glob("secrets/*.yaml")])
WORKLOADS = ("Deployment", "StatefulSet", "Job")


def documents() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def find(kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}"
    return matches[0]


def pod(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod(workload)["containers"]
    assert len(containers) == 1
    return containers[0]


def all_containers() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for doc in documents():
        if doc["kind"] in WORKLOADS:
            for spec in [*pod(doc).get("initContainers", []), *pod(doc)["containers"]]:
                yield doc, spec


def secret_data(name: str) -> dict[str, str]:
    data: dict[str, str] = find("Secret", name)["stringData"]
    return data


def environment(spec: dict[str, Any]) -> dict[str, str]:
    """The container's environment as Kubernetes would build it from the manifests' values."""
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        if "configMapRef" in source:
            env.update(find("ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            env.update(secret_data(source["secretRef"]["name"]))
    for item in spec.get("env", []):
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None:
            env[item["name"]] = secret_data(ref["name"])[ref["key"]]
        elif "value" in item:
            env[item["name"]] = item["value"]
    return env


def mounted_file(spec: dict[str, Any], workload: dict[str, Any], path: str) -> tuple[str, str]:
    """The (volume kind, source name) a file path of the container comes from."""
    volumes = {v["name"]: v for v in pod(workload)["volumes"]}
    best = max(
        (m for m in spec["volumeMounts"] if PurePosixPath(path).is_relative_to(m["mountPath"])),
        key=lambda m: len(m["mountPath"]),
    )
    volume = volumes[best["name"]]
    if "secret" in volume:
        return "secret", volume["secret"]["secretName"]
    if "persistentVolumeClaim" in volume:
        return "pvc", volume["persistentVolumeClaim"]["claimName"]
    return next(iter(k for k in volume if k != "name")), best["name"]


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


def test_secrets_live_apart_so_that_applying_the_folder_never_overwrites_them() -> None:
    top = [doc for path in K8S.glob("*.yaml") for doc in yaml.safe_load_all(path.read_text())]
    assert not [doc for doc in top if doc and doc["kind"] == "Secret"]
    assert {doc["kind"] for doc in documents() if doc["kind"] == "Secret"} == {"Secret"}


def test_every_secret_configmap_and_volume_referenced_exists() -> None:
    defined = {(d["kind"], d["metadata"]["name"]): d for d in documents()}
    for workload, spec in all_containers():
        where = f"{workload['metadata']['name']}/{spec['name']}"
        for source in spec.get("envFrom", []):
            kind, ref = next(iter(source.items()))
            kind = "ConfigMap" if kind == "configMapRef" else "Secret"
            assert (kind, ref["name"]) in defined, f"{where}: {kind} {ref['name']}"
        for item in spec.get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None:
                assert ref["key"] in secret_data(ref["name"]), f"{where}: {ref}"
        volumes = {v["name"]: v for v in pod(workload).get("volumes", [])}
        for mount in spec.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if "secret" in volume:
                data = secret_data(volume["secret"]["secretName"])
                assert mount.get("subPath", next(iter(data))) in data, f"{where}: {mount}"
            elif "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in defined, where
            elif "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert ("PersistentVolumeClaim", claim) in defined, where


def test_every_cloud_setting_is_a_real_settings_field_and_validates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("aiot-api", "aiot-ingest", "aiot-setup"):
        kind = {"aiot-api": "Deployment", "aiot-ingest": "StatefulSet"}.get(name, "Job")
        env = environment(container(find(kind, name)))
        for key in env:
            if key.startswith("AIOT_"):
                assert key.removeprefix("AIOT_").lower() in Settings.model_fields, key
        with monkeypatch.context() as patch:
            for key, value in env.items():
                if key.startswith("AIOT_"):
                    patch.setenv(key, value)
            settings = load_settings()
        assert settings.database_url.startswith("postgresql"), name
        # A fixed rollout client id would make replicas take each other's connection.
        assert settings.rollout_client_id is None, name


def test_mqtt_urls_come_from_a_secret_each_process_gets_only_its_own_user() -> None:
    config = find("ConfigMap", "aiot-cloud")["data"]
    assert not [key for key in config if key.startswith("AIOT_MQTT") and "URL" in key]
    urls = secret_data("aiot-mqtt")
    assert urlsplit(urls["ingest-url"]).username == "ingest"
    assert urlsplit(urls["control-url"]).username == "control"

    def mqtt_refs(spec: dict[str, Any]) -> dict[str, str]:
        refs = {}
        for item in spec.get("env", []):
            if item["name"].startswith("AIOT_MQTT") and item["name"].endswith("URL"):
                assert "value" not in item, f"{item['name']} holds a password: a Secret"
                ref = item["valueFrom"]["secretKeyRef"]
                assert ref["name"] == "aiot-mqtt"
                refs[item["name"]] = ref["key"]
        return refs

    api = container(find("Deployment", "aiot-api"))
    ingest = container(find("StatefulSet", "aiot-ingest"))
    setup = container(find("Job", "aiot-setup"))
    assert mqtt_refs(api) == {"AIOT_MQTT_CONTROL_URL": "control-url"}
    assert mqtt_refs(ingest) == {"AIOT_MQTT_URL": "ingest-url"}
    assert mqtt_refs(setup) == {
        "AIOT_MQTT_URL": "ingest-url",
        "AIOT_MQTT_CONTROL_URL": "control-url",
    }


def test_api_runs_two_stateless_replicas_ready_on_healthz() -> None:
    api = find("Deployment", "aiot-api")
    assert api["spec"]["replicas"] == 2
    main = container(api)
    assert "--no-ingest" in main["args"]
    assert main["readinessProbe"]["httpGet"]["path"] == "/healthz"
    service = find("Service", "aiot-api")
    assert service["spec"]["selector"] == api["spec"]["selector"]["matchLabels"]


def test_replicas_share_the_artifacts_and_one_signing_key() -> None:
    api = find("Deployment", "aiot-api")
    main = container(api)
    data_dir = PurePosixPath(environment(main)["AIOT_DATA_DIR"])
    assert mounted_file(main, api, str(data_dir / "artifacts")) == ("pvc", "aiot-data")
    assert find("PersistentVolumeClaim", "aiot-data")["spec"]["accessModes"] == ["ReadWriteMany"]
    key = str(data_dir / SIGNING_KEY_FILE)
    assert mounted_file(main, api, key) == ("secret", "aiot-signing-key")
    mount = next(m for m in main["volumeMounts"] if m["mountPath"] == key)
    assert mount["subPath"] == SIGNING_KEY_FILE


def test_ingest_runs_three_replicas_on_the_shared_subscription() -> None:
    ingest = find("StatefulSet", "aiot-ingest")
    assert ingest["spec"]["replicas"] == 3
    args = container(ingest)["args"]
    assert args[:2] == ["cloud", "ingest"]
    assert args[args.index("--share-group") + 1] == "ingest"
    assert args[args.index("--client-id") + 1] == "$(POD_NAME)", "a unique, stable client id"


def test_database_and_broker_are_external_settings() -> None:
    assert secret_data("aiot-cloud-db")["AIOT_DATABASE_URL"].startswith("postgresql")
    for url in secret_data("aiot-mqtt").values():
        assert url.startswith("mqtt://")
    kinds = {(d["kind"], d["metadata"]["name"]) for d in documents()}
    assert not any("postgres" in name or "mosquitto" in name for _, name in kinds)


def edge_config(tmp_path: Path) -> Path:
    """The agent's config from its ConfigMap: it names no secret, only where to read it."""
    text = find("ConfigMap", "aiot-edge")["data"]["edge.yaml"]
    assert secret_data("aiot-edge-k8s-edge-1")["password"] not in text
    path = tmp_path / "edge.yaml"
    path.write_text(text)
    return path


def test_edge_agent_config_from_its_configmap_is_valid_with_cloud_and_updates(
    tmp_path: Path,
) -> None:
    edge = find("Deployment", "aiot-edge")
    main = container(edge)
    assert main["args"][:3] == ["edge", "run", "--config"]
    agent = load_config(edge_config(tmp_path))
    assert agent.agent_id == "k8s-edge-1"
    assert agent.mqtt.broker.username == agent.agent_id
    assert agent.mqtt.broker.password is None, "the ConfigMap holds no password"
    assert agent.mqtt.password_file is not None
    secret = ("secret", "aiot-edge-k8s-edge-1")
    assert mounted_file(main, edge, str(agent.mqtt.password_file)) == secret
    cloud = agent.cloud
    assert cloud is not None
    assert urlsplit(cloud.api_url).hostname == "aiot-api.aiot.svc.cluster.local"
    assert cloud.public_key is not None
    assert cloud.username == agent.agent_id
    assert cloud.password_file is not None
    assert mounted_file(main, edge, str(cloud.password_file)) == secret
    assert cloud.password_file.name == "password"
    assert mounted_file(main, edge, str(agent.updates_dir))[0] == "emptyDir"
    assert mounted_file(main, edge, main["args"][3]) == ("configMap", "config")
    assert "initContainers" not in pod(edge)


def test_setup_job_creates_the_users_of_the_urls_enrolls_the_agent_writes_broker_files(
    tmp_path: Path,
) -> None:
    """The Job's script, run for real against SQLite with the manifests' values."""
    job = container(find("Job", "aiot-setup"))
    script = find("ConfigMap", "aiot-setup")["data"]["setup.sh"]
    password = tmp_path / "edge-password"
    password.write_text(secret_data("aiot-edge-k8s-edge-1")["password"])
    script = script.replace("/etc/aiot/edge-credentials/password", str(password))
    script = script.replace("/data/broker", str(tmp_path / "broker"))
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIOT_")}
    env.update(environment(job))
    env["AIOT_DATABASE_URL"] = f"sqlite:///{tmp_path / 'aiot.db'}"
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    for _ in range(2):  # safe to repeat
        result = subprocess.run(
            ["sh", "-c", script], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == 0, result.stderr
    hashes = dict(
        line.split(":", 1) for line in (tmp_path / "broker" / "passwd").read_text().splitlines()
    )
    assert set(hashes) == {"ingest", "control", "k8s-edge-1"}
    for key in ("ingest-url", "control-url"):
        url = urlsplit(secret_data("aiot-mqtt")[key])
        assert url.username is not None
        assert url.password is not None
        assert verify_mosquitto_hash(url.password, hashes[url.username])
    assert verify_mosquitto_hash(password.read_text(), hashes["k8s-edge-1"])
    conf = (tmp_path / "broker" / "mosquitto.conf").read_text()
    assert "password_file /etc/mosquitto/aiot/passwd" in conf
    assert "allow_anonymous false" in conf


def test_every_object_validates_against_the_kubernetes_schema() -> None:
    """Strict (no unknown fields) against Kubernetes 1.31's OpenAPI schema, offline."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for doc in documents():
        kubernetes_validate.validate(doc, "1.31.0", strict=True)
