"""The closed loop end to end: a real agent whose simulated spindle drifts to a new shaft
speed, a real broker, the real API over HTTP with its ingest, rollout and training workers.
``cli/drift_operator.py`` acts as the operator through REST: it labels the drifted alarms,
trains, shadows, canaries and rolls out; the new version must cut the false alarms at least
five times, catch the injected faults at least as well, serve on the agent, and lead back to
its dataset and job."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.demo_drift import PIPELINE, drift_agent_config, enroll, register_shipped
from cli.drift_loop import MODEL, DriftScenario
from cli.drift_operator import DriftOperator, run_loop
from cloud_api.config import Settings
from edge_agent.config import AgentConfig
from tests.integration.test_rollout import running, serve
from tests.services import Mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

SCENARIO = DriftScenario(speed=4.0, drift_at_s=30.0, measure_s=200.0, timeout_s=300.0)


def test_the_loop_cuts_false_alarms_and_keeps_the_faults(broker: Mosquitto, tmp_path: Path) -> None:
    """On SQLite (the demo's store): the loop's SQL parts run on PostgreSQL in their own tests
    (training jobs and workers, shadow, canaries), and this run takes minutes."""
    database_url = f"sqlite:///{tmp_path / 'cloud.db'}"
    settings = Settings(
        database_url=database_url, mqtt_url=broker.url, data_dir=tmp_path / "cloud",
        ingest_client_id=f"ingest-{tmp_path.name}"[:64], ingest_flush_s=0.02,
        rollout_tick_s=0.1, heartbeat_grace=5.0, training_poll_s=0.5,
    )  # fmt: skip
    with serve(settings) as cloud:
        register_shipped(cloud.http)
        agent_id = f"drift-{uuid.uuid4().hex[:8]}"
        section = enroll(cloud.http, agent_id, tmp_path, cloud.url)
        config = drift_agent_config(
            agent_id, broker_url=broker.url, workdir=tmp_path, cloud=section, scenario=SCENARIO
        )
        t0 = time.time()
        with running(cloud, [AgentConfig.model_validate(config)]):
            operator = DriftOperator(cloud.http, agent_id, PIPELINE, SCENARIO, t0=t0)
            result = run_loop(operator)
            serving = operator.serving()
        lineage = lineage_of(cloud.http, result.version)

    before, after = result.before, result.after
    assert before is not None
    assert after is not None
    print("\n".join(result.lines()))
    assert before.false_alarms >= 5, before  # the drift did make the old model noisy
    assert after.false_alarms_per_hour <= before.false_alarms_per_hour / 5, (before, after)
    assert after.faults > 0
    assert after.recall >= before.recall, (before, after)
    assert serving == result.version
    assert lineage["parent_version"] == "1.0.0"
    assert lineage["job"]["id"] == result.job["id"]
    assert lineage["dataset"]["id"] == result.job["dataset_version_id"]
    assert lineage["dataset"]["counts"]["labels"]["normal"] > 0
    assert result.deployment["state"] == "succeeded"
    assert result.deployment["shadow_reason"].startswith("promote_if met"), result.deployment


def lineage_of(http: httpx.Client, version: str) -> dict[str, Any]:
    response = http.get(f"/api/v1/models/{MODEL}/versions/{version}/lineage")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body
