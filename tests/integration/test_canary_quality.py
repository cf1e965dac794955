"""A canary judged on model quality end to end: three real agents on a healthy simulated
machine, a real broker and the real API over HTTP. A version that stays healthy (it loads,
self-tests and runs without an error) but alarms on everything is halted by the quality gate,
and the canary goes back to the old version; the other agents never leave it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_api.config import Settings
from tests.integration.test_rollout import (
    PIPELINE,
    Cloud,
    agent_config,
    deployment,
    ended,
    register,
    running,
    running_version,
    serve,
    wait_for,
)
from tests.model_fixtures import MODEL_NAME, write_nan_model
from tests.services import Mosquitto

pytestmark = pytest.mark.integration


@pytest.fixture
def quiet_fleet(
    database_url: str, broker: Mosquitto, tmp_path: Path
) -> Iterator[tuple[Cloud, list[str]]]:
    """Three agents with the default filters (quiet on a healthy machine), summaries twice a
    second so that the gate has windows to count."""
    settings = Settings(
        database_url=database_url, mqtt_url=broker.url, data_dir=tmp_path / "cloud",
        ingest_client_id=f"ingest-{tmp_path.name}"[:64], ingest_flush_s=0.02,
        rollout_tick_s=0.1, heartbeat_grace=5.0,
    )  # fmt: skip
    with serve(settings) as cloud:
        run = uuid.uuid4().hex[:8]
        ids = [f"quality-{run}-{i}" for i in range(3)]
        configs = [
            agent_config(a, cloud=cloud, broker=broker, workdir=tmp_path, filters=None,
                         summary_interval_s=0.5)
            for a in ids
        ]  # fmt: skip
        with running(cloud, configs):
            yield cloud, ids


def test_a_healthy_but_noisy_version_is_halted_by_the_quality_gate(
    quiet_fleet: tuple[Cloud, list[str]], tmp_path: Path
) -> None:
    cloud, ids = quiet_fleet
    canary, rest = ids[0], ids[1:]
    # Every window's class probabilities are 0: p(healthy) = 0, an anomaly score of 1.
    register(cloud, "1.1.0", write_nan_model(tmp_path / "noisy.onnx", "1.1.0", value=0.0))

    response = cloud.http.post(
        "/api/v1/deployments",
        json={"model": MODEL_NAME, "version": "1.1.0", "pipeline": PIPELINE,
              "target": {"agent_ids": ids},
              "strategy": {"canary_fraction": 0.3, "canary_healthy_s": 3.0,
                           "agent_timeout_s": 60.0, "quality": {"min_windows": 10}}},
    )  # fmt: skip
    assert response.status_code == 201, response.text
    deployment_id = response.json()["id"]

    final = wait_for(ended(cloud, deployment_id), "the deployment to end")
    assert final["state"] == "halted", final
    assert final["reason"].startswith("canary model quality out of bounds"), final["reason"]
    assert "baseline 0 alarms" in final["reason"]
    agents = {a["agent_id"]: a for a in deployment(cloud, deployment_id)["agents"]}
    assert agents[canary]["state"] == "rolled_back"
    assert {agents[a]["state"] for a in rest} == {"cancelled"}
    wait_for(lambda: running_version(cloud, canary) == "1.0.0", "the canary back on 1.0.0")
    assert {running_version(cloud, a) for a in rest} == {"1.0.0"}
