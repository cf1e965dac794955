"""`aiot agents` and `aiot events [--follow]` against the real app on a real port, fed by
the real ingest from a real broker."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner, Result

from cli.main import app as cli
from cli.server import serve_in_thread
from cloud_api.auth import create_api_key
from cloud_api.config import Settings
from cloud_api.main import create_app
from shared.messages import encode
from shared.topics import Channel
from tests.cloud.helpers import Publisher, make_batch, make_status, topic, unique_agent_id
from tests.ops.processes import Command, wait_until
from tests.services import Mosquitto, free_port

pytestmark = pytest.mark.integration


@dataclass
class Cloud:
    url: str
    key: str
    publisher: Publisher

    def events_of(self, agent_id: str) -> int:
        response = httpx.get(
            f"{self.url}/api/v1/events",
            params={"agent_id": agent_id},
            headers={"Authorization": f"Bearer {self.key}"},
        )
        return len(response.json()["items"])


@pytest.fixture
def cloud(broker: Mosquitto, tmp_path: Path) -> Iterator[Cloud]:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'cloud.db'}",
        mqtt_url=broker.url,
        ingest_client_id=f"ingest-{uuid.uuid4().hex[:12]}",
        ingest_flush_s=0.01,
        ingest_session_expiry_s=60,
        data_dir=tmp_path,
    )
    app = create_app(settings)
    publisher = Publisher("127.0.0.1", broker.port).connect()
    try:
        with serve_in_thread(app) as url:
            app.state.ingest.wait_connected()
            with app.state.sessionmaker() as session:
                _, key = create_api_key(session, name="cli", scope="read")
            yield Cloud(url, key, publisher)
    finally:
        publisher.close()


def aiot(cloud: Cloud, *args: str, key: str | None = None) -> Result:
    options = ["--api-url", cloud.url, "--api-key", cloud.key if key is None else key]
    return CliRunner().invoke(cli, [*args, *options], env={"COLUMNS": "250"})


def test_agents_shows_each_agent_its_state_and_what_it_runs(cloud: Cloud) -> None:
    agent = unique_agent_id("cli")
    cloud.publisher.publish(topic(agent, Channel.STATUS), encode(make_status(agent)))
    wait_until(lambda: agent in aiot(cloud, "agents").output, 30, "the agent to be listed")
    result = aiot(cloud, "agents")
    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.output.splitlines() if agent in line]
    assert "online" in line
    assert "spindle-vibration (vibration-anomaly 1.0.0)" in line
    assert " 7 " in line  # its outbox


def test_events_applies_the_rest_filters_and_the_limit(cloud: Cloud) -> None:
    agent = unique_agent_id("cli")
    cloud.publisher.publish(topic(agent, Channel.EVENTS), encode(make_batch(agent, 4)))
    cloud.publisher.publish(
        topic(agent, Channel.EVENTS), encode(make_batch(agent, 2, label="imbalance"))
    )
    wait_until(lambda: cloud.events_of(agent) == 6, 30, "six events stored")

    by_label = aiot(cloud, "events", "--agent-id", agent, "--label", "imbalance")
    assert by_label.exit_code == 0, by_label.output
    assert "2 events, newest first" in by_label.output
    rows = [line for line in by_label.output.splitlines() if agent in line]
    assert len(rows) == 2
    assert all("imbalance" in row for row in rows)

    limited = aiot(cloud, "events", "--agent-id", agent, "--limit", "5")
    assert "5 events, newest first" in limited.output
    assert len([line for line in limited.output.splitlines() if agent in line]) == 5


def test_refusals_are_one_line_with_the_reason(cloud: Cloud) -> None:
    bad_time = aiot(cloud, "events", "--since", "yesterday")
    assert bad_time.exit_code == 2
    assert "the API refused the request (422: query.since:" in bad_time.output
    bad_key = aiot(cloud, "agents", key="not-a-key")
    assert bad_key.exit_code == 2
    assert "the API refused the key (401" in bad_key.output
    assert "Traceback" not in bad_time.output + bad_key.output
    nowhere = CliRunner().invoke(
        cli, ["agents", "--api-url", f"http://127.0.0.1:{free_port()}", "--api-key", "k"]
    )
    assert nowhere.exit_code == 2
    assert "cannot reach the cloud API at http://127.0.0.1:" in nowhere.output
    follow_since = aiot(cloud, "events", "--follow", "--since", "2026-01-01T00:00:00Z")
    assert follow_since.exit_code == 2
    assert "--since and --until do not apply to --follow" in follow_since.output
    follow_limit = aiot(cloud, "events", "--follow", "--limit", "20")
    assert follow_limit.exit_code == 2
    assert "--limit does not apply to --follow" in follow_limit.output


def test_follow_shows_new_events_as_they_arrive_and_stops_on_sigterm(
    cloud: Cloud, tmp_path: Path
) -> None:
    agent = unique_agent_id("cli")
    follower = Command(
        ["events", "--follow", "--agent-id", agent, "--api-url", cloud.url,
         "--api-key", cloud.key],
        tmp_path / "follow.log",
    ).start()  # fmt: skip
    try:
        follower.wait_for("following new events")
        other = unique_agent_id("cli-other")
        cloud.publisher.publish(topic(other, Channel.EVENTS), encode(make_batch(other, 1)))
        cloud.publisher.publish(
            topic(agent, Channel.EVENTS), encode(make_batch(agent, 3, label="misalignment"))
        )
        wait_until(lambda: follower.output().count("misalignment") == 3, 60, "three rows")
        assert follower.process is not None
        follower.process.send_signal(signal.SIGTERM)
        assert follower.finish() == 0, follower.output()
    finally:
        follower.kill()
    output = follower.output()
    assert other not in output  # the filter applies to the stream too
    assert output.strip().splitlines()[-1] == "stopped"
