"""Status snapshot and Prometheus metrics of a running agent (no broker needed)."""

from __future__ import annotations

import time
import urllib.request

import pytest
from prometheus_client import generate_latest

from edge_agent.agent import Agent
from edge_agent.health import link_metrics
from edge_agent.pipelines.collect import CollectConfig
from shared.messages import AgentStatus, utcnow
from tests.edge.conftest import AgentConfigFactory
from tests.services import free_port


def test_status_and_metrics_report_pipelines_and_outbox(agent_config: AgentConfigFactory) -> None:
    # The broker URL points nowhere: the agent must run offline and keep its events.
    agent = Agent(agent_config())
    agent.start()
    try:
        deadline = time.monotonic() + 60
        while not agent.sources_done():
            assert time.monotonic() < deadline, "the source did not end"
            time.sleep(0.05)
        status = agent.status()
        metrics = generate_latest(agent.registry).decode()
    finally:
        agent.stop()
    (pipeline,) = status.pipelines
    assert pipeline.name == "spindle"
    assert pipeline.model is not None
    assert pipeline.model.version == "1.0.0"
    assert pipeline.samples_in == pipeline.inferences > 0
    assert pipeline.events_out == 4
    assert status.outbox_depth == 4
    assert status.state == "online"
    assert 'aiot_edge_pipeline_events_out_total{model="vibration-anomaly",' in metrics
    assert "aiot_edge_outbox_depth 4.0" in metrics
    assert "aiot_edge_mqtt_connected 0.0" in metrics


@pytest.mark.integration
def test_metrics_exporter_serves_on_the_configured_port(agent_config: AgentConfigFactory) -> None:
    config = agent_config()
    port = free_port()
    config = config.model_copy(update={"metrics": config.metrics.model_copy(update={"port": port})})
    agent = Agent(config)
    agent.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            body = response.read().decode()
    finally:
        agent.stop()
    assert "aiot_edge_pipeline_samples_in_total" in body


def test_status_and_metrics_report_collection_per_pipeline(
    agent_config: AgentConfigFactory,
) -> None:
    """Offline, without a cloud: samples kept by reason wait in the spool, counted."""
    config = agent_config()
    collecting = config.pipelines[0].model_copy(
        update={"collect": CollectConfig(random_share=0.1, seed=3)}
    )
    agent = Agent(config.model_copy(update={"pipelines": [collecting]}))
    agent.start()
    try:
        deadline = time.monotonic() + 60
        while not agent.sources_done():
            assert time.monotonic() < deadline, "the source did not end"
            time.sleep(0.05)
        assert agent.spool is not None
        agent.spool.flush()
        status = agent.status()
        metrics = generate_latest(agent.registry).decode()
    finally:
        agent.stop()
    (pipeline,) = status.pipelines
    kept = sum(pipeline.samples_kept.values())
    assert pipeline.samples_kept["event"] >= 2
    assert pipeline.samples_kept["random"] > 0
    assert status.spool_depth == pipeline.spool_depth == kept
    assert status.spool_bytes > 0
    assert pipeline.samples_uploaded == 0  # no `cloud:`, no uploader
    assert 'aiot_edge_samples_kept_total{pipeline="spindle",reason="event"} ' in metrics
    assert f'aiot_edge_pipeline_spool_depth{{pipeline="spindle"}} {kept}.0' in metrics
    assert f"aiot_edge_spool_depth {kept}.0" in metrics


def test_the_measured_link_rate_is_a_gauge_once_measured() -> None:
    status = AgentStatus(agent_id="gw-1", state="online", ts=utcnow())
    assert list(link_metrics(status)) == []
    (gauge,) = link_metrics(status.model_copy(update={"link_mbps_measured": 46.1}))
    assert gauge.name == "aiot_edge_link_mbps"
    assert gauge.samples[0].value == 46.1
