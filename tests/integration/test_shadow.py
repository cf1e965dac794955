"""Shadow deployments end to end: two real agents on a healthy simulated machine, a real broker,
the real API over HTTP and real ONNX sessions. One story on one fleet: a candidate whose input
does not fit is refused by every agent with its reason and discarded; a candidate that alarms
on everything is discarded by the deployment's ``promote_if`` rule, with the figures in the
reason; the same weights as the serving model pass the rule, are promoted into a canary and
reach every agent. Shadowing never makes an event, and the stored figures add up."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud_api.config import Settings
from tests.edge.updates.test_shadow import write_short_window_model
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
    window_events,
)
from tests.model_fixtures import MODEL_NAME, write_nan_model, write_same_model
from tests.services import Mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # whole shadow windows: phase 2

RULE = {"agreement_min": 0.9, "alarm_rate_max_ratio": 3.0, "latency_p99_max_ratio": 50.0}


@pytest.fixture
def fleet(
    database_url: str, broker: Mosquitto, tmp_path: Path
) -> Iterator[tuple[Cloud, list[str]]]:
    """Two agents with the default filters (quiet on a healthy machine)."""
    settings = Settings(
        database_url=database_url, mqtt_url=broker.url, data_dir=tmp_path / "cloud",
        ingest_client_id=f"ingest-{tmp_path.name}"[:64], ingest_flush_s=0.02,
        rollout_tick_s=0.1, heartbeat_grace=5.0,
    )  # fmt: skip
    with serve(settings) as cloud:
        run = uuid.uuid4().hex[:8]
        ids = [f"shadow-{run}-{i}" for i in range(2)]
        configs = [
            agent_config(a, cloud=cloud, broker=broker, workdir=tmp_path, filters=None) for a in ids
        ]
        with running(cloud, configs):
            yield cloud, ids


def shadow_deploy(cloud: Cloud, version: str, ids: list[str], **shadow: Any) -> int:
    response = cloud.http.post(
        "/api/v1/deployments",
        json={"model": MODEL_NAME, "version": version, "pipeline": PIPELINE,
              "target": {"agent_ids": ids},
              "strategy": {"kind": "shadow", "canary_fraction": 0.5, "canary_healthy_s": 1.0,
                           "agent_timeout_s": 60.0, "quality": None,
                           "shadow": {"window_s": 3.0, "min_inputs": 5, **shadow}}},
    )  # fmt: skip
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["state"] == "shadow"
    deployment_id: int = body["id"]
    return deployment_id


def left_shadow(cloud: Cloud, deployment_id: int) -> dict[str, Any] | None:
    body = deployment(cloud, deployment_id)
    return body if body["state"] != "shadow" else None


def shadow_report(cloud: Cloud, deployment_id: int) -> dict[str, Any]:
    response = cloud.http.get(f"/api/v1/deployments/{deployment_id}/shadow")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def agent_shadow(cloud: Cloud, agent_id: str) -> Any:
    (pipeline,) = cloud.http.get(f"/api/v1/agents/{agent_id}").json()["pipelines"]
    return pipeline.get("shadow")


def test_shadow_refuses_discards_and_promotes(
    fleet: tuple[Cloud, list[str]], tmp_path: Path
) -> None:
    cloud, ids = fleet

    # 1. A candidate that takes windows of 1024 values: every agent refuses it, with why.
    register(cloud, "0.9.0", write_short_window_model(tmp_path / "short.onnx"))
    first = shadow_deploy(cloud, "0.9.0", ids, promote_if=RULE)
    final = wait_for(lambda: left_shadow(cloud, first), "the misfit to be discarded")
    assert final["state"] == "discarded", final
    assert final["reason"] == "no agent completed its shadow window (2 failed)"
    for agent in final["agents"]:
        assert agent["state"] == "failed"
        assert "input window 1024" in agent["reason"], agent["reason"]
    refused = shadow_report(cloud, first)
    assert {a["state"] for a in refused["agents"]} == {"refused"}

    # 2. A candidate that alarms on every window: the rule discards it, figures in the reason.
    register(cloud, "1.2.0", write_nan_model(tmp_path / "noisy.onnx", "1.2.0", value=0.0))
    second = shadow_deploy(cloud, "1.2.0", ids, promote_if=RULE)
    final = wait_for(lambda: left_shadow(cloud, second), "the noisy candidate's verdict")
    assert final["state"] == "discarded", final
    assert final["reason"].startswith("promote_if not met: agreement"), final["reason"]
    assert "alarm rate 1000.0/1k" in final["reason"], final["reason"]
    report = shadow_report(cloud, second)
    figures = report["figures"]
    assert figures["candidate_alarm_rate_per_1k"] == 1000.0
    assert figures["inputs_shadowed"] >= 5
    per_agent = [a["figures"] for a in report["agents"]]
    assert len(per_agent) == 2
    # The figures add up: every input seen was shadowed or skipped, on each agent and in all.
    for f in per_agent:
        assert f["inputs_shadowed"] + f["skipped"] == f["inputs_seen"]
    assert figures["inputs_seen"] == sum(f["inputs_seen"] for f in per_agent)
    assert figures["inputs_shadowed"] == sum(f["inputs_shadowed"] for f in per_agent)
    wait_for(lambda: all(agent_shadow(cloud, a) is None for a in ids), "the shadows to end")
    assert {running_version(cloud, a) for a in ids} == {"1.0.0"}

    # 3. The serving model's weights as 1.1.0: the rule promotes it into a canary, then all.
    register(cloud, "1.1.0", write_same_model(tmp_path / "same.onnx", "1.1.0"))
    third = shadow_deploy(cloud, "1.1.0", ids, promote_if=RULE)
    promoted = wait_for(lambda: left_shadow(cloud, third), "the better candidate's verdict")
    assert promoted["state"] in ("canary", "rolling", "succeeded"), promoted
    assert promoted["reason"].startswith("promote_if met: "), promoted["reason"]
    assert "agreement 1.000" in promoted["reason"], promoted["reason"]
    final = wait_for(ended(cloud, third), "the promoted canary to finish")
    assert final["state"] == "succeeded", final
    assert {running_version(cloud, a) for a in ids} == {"1.1.0"}

    # Shadowing made no event: every stored event came from a model that served.
    for agent_id in ids:
        versions = {e["model"]["version"] for e in window_events(cloud, agent_id)}
        assert versions <= {"1.0.0", "1.1.0"}, versions


def test_an_operator_promotes_a_shadow_without_a_rule(
    fleet: tuple[Cloud, list[str]], tmp_path: Path
) -> None:
    cloud, ids = fleet
    register(cloud, "1.1.0", write_same_model(tmp_path / "same.onnx", "1.1.0"))
    deployment_id = shadow_deploy(cloud, "1.1.0", ids)
    over = wait_for(
        lambda: shadow_report(cloud, deployment_id)["reason"].startswith("shadow window over"),
        "the window to end",
    )
    assert over
    body = shadow_report(cloud, deployment_id)
    assert body["state"] == "shadow"
    assert body["figures"]["agreement"] == 1.0
    response = cloud.http.post(f"/api/v1/deployments/{deployment_id}/shadow/promote")
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "canary"
    again = cloud.http.post(f"/api/v1/deployments/{deployment_id}/shadow/discard")
    assert again.status_code == 409
    final = wait_for(ended(cloud, deployment_id), "the canary to finish")
    assert final["state"] == "succeeded", final
