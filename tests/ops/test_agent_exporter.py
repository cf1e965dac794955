"""The agent's exporter: on by default on 127.0.0.1, with the liveness and readiness probes;
a port someone else holds costs the agent its exporter, never its work."""

from __future__ import annotations

import logging
import socket

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from edge_agent.health import AgentCollector, MetricsConfig
from tests.cloud.helpers import make_status
from tests.edge.conftest import AgentConfigFactory, agent_config
from tests.ops.scrape import get, value
from tests.services import free_port

__all__ = ["agent_config"]  # the fixture, used by the tests below

pytestmark = pytest.mark.integration


def on_port(config: AgentConfig, port: int) -> AgentConfig:
    return config.model_copy(update={"metrics": MetricsConfig(port=port)})


def test_the_exporter_is_on_by_default_on_localhost() -> None:
    assert MetricsConfig() == MetricsConfig(host="127.0.0.1", port=9464)


def test_probes_say_live_and_not_ready_while_the_broker_is_unreachable(
    agent_config: AgentConfigFactory,
) -> None:
    port = free_port()
    agent = Agent(on_port(agent_config(duration_s=3600.0, speed=1.0), port))
    agent.start()
    try:
        base = f"http://127.0.0.1:{port}"
        assert get(f"{base}/livez") == (200, "ok\n")
        assert get(f"{base}/readyz") == (503, "not connected to the broker\n")
        assert value(get(f"{base}/metrics")[1], "aiot_edge_mqtt_connected") == 0.0
        assert agent.problem() is None
    finally:
        agent.stop()
    assert agent.problem() == "not running"
    assert get(f"http://127.0.0.1:{port}/livez")[0] == 0  # nothing listens any more


def test_a_busy_port_costs_the_exporter_not_the_agent(
    agent_config: AgentConfigFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        agent = Agent(on_port(agent_config(), port))
        with caplog.at_level(logging.WARNING, logger="edge_agent.health"):
            agent.start()
        try:
            assert agent.metrics is not None
            assert agent.metrics.port == 0
            assert agent.problem() is None
        finally:
            agent.stop()
    assert f"metrics exporter off: cannot listen on 127.0.0.1:{port}" in caplog.text
    assert "set metrics.port to a free port, or 0 to turn it off" in caplog.text


def test_the_spool_depth_is_exported_once_from_the_status() -> None:
    registry = CollectorRegistry()
    status = make_status("spool-agent", spool_depth=3)
    registry.register(AgentCollector(lambda: status, lambda: None, lambda: 0))
    text = generate_latest(registry).decode()
    assert value(text, "aiot_edge_spool_depth") == 3
    assert text.count("# TYPE aiot_edge_spool_depth gauge") == 1
