"""Every process of the scale-out layout exports ``/metrics``, scraped here over HTTP.

The API runs ``--no-ingest --workers 2`` (its counters summed over both worker processes),
a separate ``aiot cloud ingest`` worker stores what arrives and exports the ingest counters
on its own port (non-zero: the issue's "metrics go blind" is gone), and an agent
(``aiot edge run``) exports its own, with the probes Kubernetes and systemd use.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.messages import encode
from shared.topics import Channel
from tests.cloud.helpers import Publisher, make_batch, topic, unique_agent_id
from tests.edge.conftest import model_section
from tests.ops.processes import Command, wait_until
from tests.ops.scrape import get, value
from tests.services import Mosquitto, free_port

pytestmark = pytest.mark.integration

REQUESTS = 12


@pytest.fixture
def commands() -> Iterator[list[Command]]:
    started: list[Command] = []
    yield started
    for each in started:
        each.kill()


def agent_config(tmp_path: Path, agent_id: str, broker: Mosquitto, port: int) -> Path:
    model = model_section()
    path = tmp_path / "edge.yaml"
    path.write_text(
        f"agent_id: {agent_id}\n"
        f"mqtt: {{url: '{broker.url}', heartbeat_s: 1}}\n"
        f"outbox: {{path: '{tmp_path / 'outbox.db'}'}}\n"
        f"metrics: {{port: {port}}}\n"
        "pipelines:\n"
        "  - name: spindle\n"
        "    source: {type: simulated_vibration, seed: 1, speed: 1.0}\n"
        f"    model: {{name: {model['name']}, path: '{model['path']}', "
        f"version: '{model['version']}', labels: {model['labels']}, normal_label: healthy}}\n"
    )
    return path


def test_api_ingest_worker_and_agent_each_export_their_metrics(
    broker: Mosquitto, tmp_path: Path, commands: list[Command]
) -> None:
    database = f"sqlite:///{tmp_path / 'cloud.db'}"
    api_port, ingest_port, agent_port = free_port(), free_port(), free_port()
    api = Command(
        ["cloud", "serve", "--port", str(api_port), "--db", database, "--no-ingest",
         "--workers", "2", "--mqtt", broker.url],
        tmp_path / "api.log",
    )  # fmt: skip
    commands.append(api.start())
    api.wait_for("Application startup complete", count=2)
    ingest = Command(
        ["cloud", "ingest", "--db", database, "--mqtt", broker.url, "--share-group", "ingest",
         "--client-id", f"ingest-{tmp_path.name}"[:60], "--metrics-port", str(ingest_port)],
        tmp_path / "ingest.log",
    )  # fmt: skip
    commands.append(ingest.start())
    ingest.wait_for("subscribed")
    agent_id = unique_agent_id("scrape")
    agent = Command(
        ["edge", "run", "--config", str(agent_config(tmp_path, agent_id, broker, agent_port))],
        tmp_path / "agent.log",
    )
    commands.append(agent.start())

    # The ingest worker: events stored, counted on its own port; both probes pass.
    publisher = Publisher("127.0.0.1", broker.port).connect()
    try:
        other = unique_agent_id("scrape-load")
        publisher.publish(topic(other, Channel.EVENTS), encode(make_batch(other, 5)))
    finally:
        publisher.close()
    ingest_url = f"http://127.0.0.1:{ingest_port}"
    wait_until(
        lambda: (value(get(f"{ingest_url}/metrics")[1], "aiot_ingest_events_total") or 0) >= 5,
        60,
        "the ingest worker to count the events",
    )
    assert get(f"{ingest_url}/livez") == (200, "ok\n")
    assert get(f"{ingest_url}/readyz") == (200, "ok\n")

    # The agent: its exporter and probes, on by config; ready once connected to the broker.
    agent_url = f"http://127.0.0.1:{agent_port}"
    wait_until(lambda: get(f"{agent_url}/readyz")[0] == 200, 60, "the agent to be ready")
    assert get(f"{agent_url}/livez") == (200, "ok\n")
    agent_metrics = get(f"{agent_url}/metrics")[1]
    assert value(agent_metrics, "aiot_edge_mqtt_connected") == 1.0
    assert value(agent_metrics, "aiot_edge_outbox_depth") is not None

    # The API: the fleet gauges from the database that ingest fills, in any worker's answer.
    api_url = f"http://127.0.0.1:{api_port}"

    def agent_online() -> bool:
        text = get(f"{api_url}/metrics")[1]
        return value(text, "aiot_agent_outbox_depth", agent_id=agent_id) is not None

    wait_until(agent_online, 60, "the API to count the agent online")
    text = get(f"{api_url}/metrics")[1]
    assert (value(text, "aiot_agents", state="online") or 0) >= 1
    assert value(text, "aiot_deployments", state="halted") == 0.0

    # Requests are counted by route template and summed over both worker processes:
    # whichever worker answers the scrape, it reports every request.
    for n in range(REQUESTS):
        assert get(f"{api_url}/api/v1/agents/{agent_id}-{n}")[0] == 401
    for _ in range(6):
        text = get(f"{api_url}/metrics")[1]
        counted = value(
            text, "aiot_http_requests_total", method="GET", route="unmatched", status="401"
        )
        assert counted == REQUESTS, text
        assert f"{agent_id}-0" not in text

    for each in (agent, ingest, api):
        assert each.process is not None
        each.process.send_signal(signal.SIGTERM)
        assert each.finish() == 0, each.output()
