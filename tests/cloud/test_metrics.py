"""The API's ``/metrics``: latency by route template, and fleet gauges read from the database."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from cloud_api.tables import DeploymentRow
from shared.messages import encode, utcnow
from shared.topics import Channel
from tests.cloud.helpers import Publisher, make_status, topic, unique_agent_id, wait_until
from tests.ops.scrape import value

pytestmark = pytest.mark.integration


def test_request_latency_is_a_histogram_by_route_template(api: TestClient) -> None:
    agent = unique_agent_id()
    for _ in range(3):
        assert api.get(f"/api/v1/agents/{agent}").status_code == 404
    text = api.get("/metrics").text
    route = "/api/v1/agents/{agent_id}"
    count = value(text, "aiot_http_request_duration_seconds_count", method="GET", route=route)
    assert count == 3
    slowest = value(
        text, "aiot_http_request_duration_seconds_bucket", method="GET", route=route, le="+Inf"
    )
    assert slowest == 3
    assert agent not in text  # never the raw path


def test_fleet_gauges_count_agents_and_deployments(api: TestClient, publisher: Publisher) -> None:
    agent = unique_agent_id()
    publisher.publish(
        topic(agent, Channel.STATUS),
        encode(make_status(agent, ack_rtt_p99_s=0.25, link_mbps_measured=46.1)),
        retain=True,
    )

    def scraped() -> str | None:
        text = api.get("/metrics").text
        return text if value(text, "aiot_agent_outbox_depth", agent_id=agent) else None

    text = wait_until(scraped, what="the agent in the metrics")
    assert value(text, "aiot_agent_outbox_depth", agent_id=agent) == 7
    assert value(text, "aiot_agent_ack_rtt_p99_seconds", agent_id=agent) == 0.25
    assert value(text, "aiot_agent_link_mbps", agent_id=agent) == 46.1
    assert (value(text, "aiot_agents", state="online") or 0) >= 1
    assert value(text, "aiot_deployments", state="halted") == 0

    now = utcnow()
    with api.app.state.sessionmaker() as session:  # type: ignore[attr-defined]
        session.add(
            DeploymentRow(
                model="m",
                version="2",
                pipeline="p",
                target={},
                strategy={},
                state="halted",
                reason="canary failed",
                created_at=now,
                updated_at=now,
            )
        )
        session.commit()
    text = api.get("/metrics").text
    assert value(text, "aiot_deployments", state="halted") == 1
    assert value(text, "aiot_deployments", state="canary") == 0


def test_rollout_ticks_are_counted(api: TestClient) -> None:
    def ticked() -> float | None:
        return value(api.get("/metrics").text, "aiot_rollout_ticks_total")

    assert wait_until(ticked, what="a rollout tick") >= 1
