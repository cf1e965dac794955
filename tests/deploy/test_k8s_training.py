"""deploy/k8s/50-train-worker.yaml: training workers beside the API, on the API's artifacts
and signing key, and the API itself not training."""

from __future__ import annotations

from pathlib import PurePosixPath

from cloud_api.config import load_settings
from cloud_api.registry import SIGNING_KEY_FILE
from tests.deploy.test_k8s import container, environment, find, mounted_file


def test_train_workers_share_the_apis_artifacts_and_signing_key() -> None:
    workers = find("Deployment", "aiot-train-worker")
    assert workers["spec"]["replicas"] == 2
    main = container(workers)
    assert main["args"][:2] == ["cloud", "train-worker"]
    assert main["args"][main["args"].index("--name") + 1] == "$(POD_NAME)"
    env = environment(main)
    assert env["AIOT_DATABASE_URL"].startswith("postgresql")  # SKIP LOCKED: several replicas
    data_dir = PurePosixPath(env["AIOT_DATA_DIR"])
    assert mounted_file(main, workers, str(data_dir / "artifacts")) == ("pvc", "aiot-data")
    key = str(data_dir / SIGNING_KEY_FILE)
    assert mounted_file(main, workers, key) == ("secret", "aiot-signing-key")


def test_the_api_leaves_training_to_the_workers() -> None:
    api = container(find("Deployment", "aiot-api"))
    env = environment(api)
    settings = load_settings(
        database_url=env["AIOT_DATABASE_URL"], training_enabled=env["AIOT_TRAINING_ENABLED"]
    )
    assert settings.training_enabled is False
