"""The escalations panel (headless Chromium, the real app and runner): per agent and
pipeline, how often the edge asked the cloud model, how often they agreed, what was refused,
and the agent's budget drops and collection from its last status."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import Page, expect

from cloud_api.auth import create_api_key
from shared.messages import PipelineStatus, encode
from shared.topics import Channel
from tests.cloud.escalation_helpers import PIPELINE, escalation, register_cloud_model, windows
from tests.cloud.helpers import MODEL, Publisher, make_status, topic, unique_agent_id, wait_until
from tests.dashboard.conftest import LiveServer, Traffic

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def test_the_panel_shows_rate_agreement_refusals_and_the_agents_status(
    live_api: LiveServer, mqtt: Publisher, page: Page, traffic: Traffic
) -> None:
    with live_api.session() as session:
        key = create_api_key(session, name="panel", scope="admin")[1]
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=live_api.url, headers=headers, timeout=60) as client:
        register_cloud_model(client)
        agent = unique_agent_id("panel")
        status = make_status(
            agent,
            pipelines=[
                PipelineStatus.model_validate(
                    {"name": PIPELINE, "model": MODEL, "samples_in": 10, "inferences": 10,
                     "events_out": 1, "spool_depth": 4, "sample_bytes_uploaded": 4096,
                     "samples_kept": {"escalated": 3, "random": 2}}
                )
            ],
        )  # fmt: skip
        mqtt.publish(topic(agent, Channel.STATUS), encode(status))
        healthy, fault = windows(2)
        sent = [
            escalation(agent, healthy, label="healthy"),  # agrees
            escalation(agent, fault, label="healthy"),  # the cloud says imbalance
            escalation(agent, healthy[:10], label="healthy"),  # does not fit: refused
        ]
        for one in sent:
            mqtt.publish(topic(agent, Channel.ESCALATIONS), encode(one))

        def counted() -> bool:
            stats = client.get("/api/v1/escalations/stats", params={"agent_id": agent}).json()
            return [row["escalations"] for row in stats["pipelines"]] == [3]

        wait_until(counted, what="the escalations to be answered")

    page.goto(f"{live_api.url}/#key={key}")
    row = page.locator(f'[data-testid="escalation-row"][data-agent-id="{agent}"]')
    expect(row.get_by_test_id("escalation-count")).to_have_text("3 (0.05/min)")
    expect(row.get_by_test_id("escalation-agreement")).to_have_text("50 %")
    expect(row.get_by_test_id("escalation-refused")).to_have_text("1")
    expect(row).to_contain_text("5 kept, 4 KiB up, spool 4")
    assert traffic.page_errors == []
