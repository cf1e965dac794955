"""Remote configuration through the real app: the routes store overlays, the rollout worker
publishes them retained on ``config``, agents report them, ``aiot config`` drives the API.

The last test runs a real agent against the app: a threshold set over REST reaches it, and
the API shows it applied; an overlay it cannot take is shown refused with its reason.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
import typer
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError

from cli.config_cmd import build_overlay, config_table, get_configs, put_overlay
from cloud_api.db import create_db_engine, create_sessionmaker, migrate
from cloud_api.queries import agent_config as config_queries
from cloud_api.tables import AgentRow
from edge_agent.agent import Agent
from shared.messages import ConfigOverlay, ConfigStatus, encode, utcnow
from shared.topics import Channel
from tests.cloud.conftest import AppFactory
from tests.cloud.helpers import (
    Publisher,
    client_as,
    make_status,
    new_api_key,
    topic,
    unique_agent_id,
    wait_until,
)
from tests.cloud.rollout.test_worker import forwarding_client
from tests.edge.conftest import AgentConfigFactory
from tests.edge.conftest import agent_config as agent_config  # the fixture, for the last test
from tests.edge.test_remote_config import with_filters
from tests.services import Mosquitto

pytestmark = pytest.mark.integration

LOWER = {"pipelines": {"spindle": {"filters": {"threshold": {"threshold": 0.5}}}}}


class ConfigWatcher:
    """A real paho client that keeps the last retained config message of some agents."""

    def __init__(self, broker: Mosquitto, agent_ids: list[str]) -> None:
        self.seen: dict[str, ConfigOverlay] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port)
        self.client.subscribe([(topic(a, Channel.CONFIG), 1) for a in agent_ids])
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        if msg.payload:
            message = ConfigOverlay.model_validate_json(msg.payload)
            with self._lock:
                self.seen[message.agent_id] = message

    def last(self, agent_id: str) -> ConfigOverlay | None:
        with self._lock:
            return self.seen.get(agent_id)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def config_api(make_api: AppFactory) -> Iterator[TestClient]:
    with make_api(rollout_tick_s=0.05) as client:
        client.app.state.rollout.wait_connected()  # type: ignore[attr-defined]
        yield client


def report(publisher: Publisher, agent_id: str, config: ConfigStatus | None = None) -> None:
    status = make_status(agent_id, config=config, ts=utcnow())
    publisher.publish(topic(agent_id, Channel.STATUS), encode(status), retain=True)


@pytest.fixture
def fleet(config_api: TestClient, publisher: Publisher) -> list[str]:
    agent_ids = sorted(unique_agent_id(f"cfg{i}") for i in range(3))
    for agent_id in agent_ids:
        report(publisher, agent_id)
        url = f"/api/v1/agents/{agent_id}"
        wait_until(lambda u=url: config_api.get(u).status_code == 200, what=f"{url} stored")  # type: ignore[misc]
    return agent_ids


def test_an_overlay_is_stored_published_retained_and_reported(
    config_api: TestClient, fleet: list[str], broker: Mosquitto, publisher: Publisher
) -> None:
    agent_id = fleet[0]
    watcher = ConfigWatcher(broker, [agent_id])
    try:
        put = config_api.put(f"/api/v1/agents/{agent_id}/config", json={"overlay": LOWER})
        assert put.status_code == 200, put.text
        body = put.json()
        assert (body["state"], body["desired"]["version"], body["desired"]["overlay"]) == (
            "pending", 1, LOWER,
        )  # fmt: skip
        message = wait_until(lambda: watcher.last(agent_id), what="the retained config")
        assert (message.version, message.overlay) == (1, LOWER)
    finally:
        watcher.close()

    # The agent says it runs version 1: desired and reported agree.
    report(publisher, agent_id, ConfigStatus(desired_version=1, applied_version=1, applied=LOWER))
    shown = wait_until(
        lambda: (
            (got := config_api.get(f"/api/v1/agents/{agent_id}/config").json())["state"]
            == "applied"
            and got
        ),
        what="the applied state",
    )
    assert shown["reported"]["applied"] == LOWER

    # A second change is version 2; the agent refuses it, and the API says why.
    config_api.put(f"/api/v1/agents/{agent_id}/config", json={"overlay": {"mqtt": {}}})
    refusal = "mqtt cannot change at run time (edit the file, restart)"
    refused = ConfigStatus(desired_version=2, applied_version=1, applied=LOWER, refused=refusal)
    report(publisher, agent_id, refused)
    shown = wait_until(
        lambda: (
            (got := config_api.get(f"/api/v1/agents/{agent_id}/config").json())["state"]
            == "refused"
            and got
        ),
        what="the refused state",
    )
    assert shown["reported"]["refused"] == refusal
    assert shown["desired"]["version"] == 2


def test_a_label_selector_sets_the_agents_with_every_label(
    config_api: TestClient, fleet: list[str]
) -> None:
    site = f"plant-{uuid.uuid4().hex[:6]}"
    labels = {fleet[0]: {"site": site, "line": "3"}, fleet[1]: {"site": site, "line": "4"}}
    with config_api.app.state.sessionmaker() as session:  # type: ignore[attr-defined]
        for agent_id, values in labels.items():
            session.execute(
                update(AgentRow).where(AgentRow.agent_id == agent_id).values(labels=values)
            )
        session.commit()
    target = {"labels": {"site": site, "line": "3"}}
    response = config_api.put("/api/v1/agent-configs", json={"target": target, "overlay": LOWER})
    assert response.status_code == 200, response.text
    assert [(c["agent_id"], c["desired"]["version"]) for c in response.json()] == [(fleet[0], 1)]
    page = config_api.get("/api/v1/agent-configs", params={"limit": 1000}).json()
    listed = {c["agent_id"]: c["state"] for c in page["items"]}
    assert (listed[fleet[0]], listed[fleet[1]]) == ("pending", "none")


def test_two_writers_of_one_agent_cannot_both_take_the_next_version(database_url: str) -> None:
    """The second of two concurrent PUTs that read the same version fails as a conflict (the
    route's 409) instead of publishing another overlay under the version the first took."""
    engine = create_db_engine(database_url)
    migrate(engine)
    sessions = create_sessionmaker(engine)
    with sessions() as setup:
        config_queries.set_config(setup, agent_ids=["a-1"], overlay={"v": 1}, now=utcnow())
        setup.commit()
    with sessions() as first, sessions() as second:
        # The second writer has read version 1 (set_config's read) and not written it yet.
        stale = config_queries.get_config(second, agent_id="a-1")
        assert stale is not None
        assert stale.version == 1
        (taken,) = config_queries.set_config(
            first, agent_ids=["a-1"], overlay={"v": 2}, now=utcnow()
        )
        first.commit()
        stale.overlay, stale.updated_at = {"v": 3}, utcnow()  # set_config's write
        with pytest.raises(SQLAlchemyError) as raised:
            second.commit()
        assert config_queries.is_conflict(raised.value)
    with sessions() as check:
        row = config_queries.get_config(check, agent_id="a-1")
        assert row is not None
        assert (row.version, row.overlay) == (taken.version, {"v": 2}) == (2, {"v": 2})
    engine.dispose()


@pytest.mark.parametrize(
    ("method", "url", "body", "status", "reason"),
    [
        ("put", "/api/v1/agents/nobody-here/config", {"overlay": {}}, 404, "unknown"),
        ("get", "/api/v1/agents/nobody-here/config", None, 404, "unknown"),
        ("put", "/api/v1/agents/{a}/config", {"overlay": [1]}, 422, "must be an object"),
        ("put", "/api/v1/agents/{a}/config", {"overlay": {"a": "\u0000"}}, 422, "NUL"),
        ("put", "/api/v1/agents/{a}/config", {"overlay": {"x": "y" * 20000}}, 422, "at most"),
        ("put", "/api/v1/agents/{a}/config", {"overlay": {}, "extra": 1}, 422, "extra"),
        (
            "put", "/api/v1/agent-configs",
            {"target": {"labels": {"nobody": "x"}}, "overlay": {}}, 422, "matches no known agent",
        ),
    ],
)  # fmt: skip
def test_refusals_name_the_problem(
    config_api: TestClient, fleet: list[str], method: str, url: str, body: Any, status: int,
    reason: str,
) -> None:  # fmt: skip
    response = config_api.request(method, url.format(a=fleet[0]), json=body)
    assert response.status_code == status, response.text
    assert reason in response.text


def test_setting_a_configuration_takes_the_operate_scope(
    config_api: TestClient, fleet: list[str]
) -> None:
    reader = client_as(config_api, new_api_key(config_api, "read"))
    url = f"/api/v1/agents/{fleet[0]}/config"
    assert reader.put(url, json={"overlay": LOWER}).status_code == 403
    assert reader.get(url).status_code == 200


# -- aiot config ---------------------------------------------------------------------------


def test_cli_builds_the_overlay_from_a_file_and_set_pairs(tmp_path: Path) -> None:
    file = tmp_path / "overlay.yaml"
    file.write_text("log_level: INFO\npipelines:\n  spindle:\n    summary_interval_s: 30\n")
    pairs = ["pipelines.spindle.filters.threshold.threshold=0.6", "log_level=DEBUG"]
    assert build_overlay(file, pairs) == {
        "log_level": "DEBUG",
        "pipelines": {
            "spindle": {"summary_interval_s": 30, "filters": {"threshold": {"threshold": 0.6}}}
        },
    }
    with pytest.raises(typer.Exit) as wrong:
        build_overlay(None, ["log_level"])
    assert wrong.value.exit_code == 2


def test_cli_sets_one_agent_or_a_fleet_and_shows_them(
    config_api: TestClient, fleet: list[str]
) -> None:
    seen: list[httpx.Request] = []
    with forwarding_client(config_api, seen) as client:
        one = put_overlay(client, {"agent_ids": [fleet[0]]}, LOWER)
        two = put_overlay(client, {"agent_ids": fleet[1:]}, {"log_level": "DEBUG"})
        shown = get_configs(client, [fleet[0]])
        with pytest.raises(typer.Exit) as refused:
            put_overlay(client, {"agent_ids": ["nobody-here"]}, LOWER)
    assert [r.url.path for r in seen[:2]] == [
        f"/api/v1/agents/{fleet[0]}/config",
        "/api/v1/agent-configs",
    ]
    assert [c["agent_id"] for c in one + two] == fleet
    assert shown[0]["desired"]["overlay"] == LOWER
    assert refused.value.exit_code == 2
    assert config_table(shown, title="t").row_count == 1


# -- a real agent --------------------------------------------------------------------------


def test_a_real_agent_applies_an_overlay_set_over_rest(
    config_api: TestClient, broker: Mosquitto, agent_config: AgentConfigFactory
) -> None:
    schedule = [{"at_s": 10 * i + 5, "duration_s": 5, "fault": "imbalance"} for i in range(360)]
    config = with_filters(agent_config(broker.url, duration_s=3600, speed=5, schedule=schedule))
    agent_id = config.agent_id
    agent = Agent(config)
    agent.start()
    try:
        url = f"/api/v1/agents/{agent_id}/config"
        wait_until(lambda: config_api.get(f"/api/v1/agents/{agent_id}").status_code == 200,
                   what="the agent's status stored")  # fmt: skip
        assert config_api.put(url, json={"overlay": LOWER}).status_code == 200
        wait_until(lambda: config_api.get(url).json()["state"] == "applied", what="applied")
        wait_until(lambda: agent.pipelines[0].counters.events_out >= 2, what="events on 0.5")

        bad = {"pipelines": {"spindle": {"source": {"type": "csv"}}}}
        assert config_api.put(url, json={"overlay": bad}).status_code == 200
        shown = wait_until(
            lambda: (got := config_api.get(url).json())["state"] == "refused" and got,
            what="refused",
        )
        assert "pipelines.spindle.source cannot change at run time" in shown["reported"]["refused"]
        assert shown["reported"]["applied_version"] == 1
    finally:
        agent.stop()
