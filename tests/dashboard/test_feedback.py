"""Feedback and review in the dashboard (headless Chromium, the real app): an operator marks
an event a false alarm, which labels its samples; the review list shows edge/cloud
disagreements."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from cloud_api.auth import create_api_key
from cloud_api.tables import SampleLabelRow, SampleRow
from shared.messages import encode, new_event_id, utcnow
from shared.topics import Channel
from tests.cloud.helpers import Publisher, make_batch, topic, unique_agent_id, wait_until
from tests.cloud.sample_helpers import window_sample
from tests.dashboard.conftest import LiveServer, Traffic

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def get(live_api: LiveServer, key: str, path: str, **params: Any) -> Any:
    response = httpx.get(
        f"{live_api.url}{path}", params=params, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    return response.json()


def store_sample(live_api: LiveServer, agent: str, event_id: str, cloud_label: str) -> str:
    """A sample of the event with the edge's label and a cloud label (as escalation will)."""
    meta, _ = window_sample(agent, reason="event", event_id=event_id, label="bearing_outer_race")
    now = utcnow()
    with live_api.session() as session:
        session.add(
            SampleRow(
                id=meta.id, agent_id=agent, pipeline=meta.pipeline, ts=meta.ts, reason="event",
                event_id=event_id, sha256=meta.sha256, meta=meta.model_dump(mode="json"),
                received_at=now,
            )
        )  # fmt: skip
        for source, label in (("edge", meta.label), ("cloud", cloud_label)):
            session.add(
                SampleLabelRow(
                    sample_id=meta.id, label=label, source=source, author=source,
                    verdict=None, model="vibration-anomaly 1.0.0", created_at=now,
                )
            )  # fmt: skip
        session.commit()
    return meta.id


def test_an_operator_marks_a_false_alarm_and_reviews_disagreements(
    live_api: LiveServer, mqtt: Publisher, page: Page, traffic: Traffic
) -> None:
    with live_api.session() as session:
        key = create_api_key(session, name="night-shift", scope="operate")[1]
    agent = unique_agent_id("fb")
    batch = make_batch(agent, 2)
    mqtt.publish(topic(agent, Channel.EVENTS), encode(batch))
    wait_until(
        lambda: len(get(live_api, key, "/api/v1/events", agent_id=agent)["items"]) == 2,
        what="the events to be stored",
    )
    alarm = batch.events[1]
    sample_id = store_sample(live_api, agent, alarm.id, cloud_label="healthy")
    store_sample(live_api, agent, new_event_id(), cloud_label="bearing_outer_race")  # agree

    page.goto(f"{live_api.url}/#key={key}")
    item = page.locator(f'[data-testid="feed-item"][data-event-id="{alarm.id}"]')
    item.get_by_test_id("feedback-false_alarm").click()
    expect(item.get_by_test_id("feedback-outcome")).to_have_text(
        "false alarm by night-shift · 1 sample(s) labelled normal"
    )
    labelled = get(live_api, key, "/api/v1/samples", label="normal", source="person")["items"]
    assert [s["id"] for s in labelled] == [sample_id]

    rows = page.get_by_test_id("review-row")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-sample-id", sample_id)
    expect(rows.first.get_by_test_id("review-edge")).to_have_text("bearing_outer_race")
    expect(rows.first.get_by_test_id("review-cloud")).to_have_text("healthy")
    assert traffic.page_errors == []
