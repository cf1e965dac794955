"""The dashboard in headless Chromium against the real app: fleet, chart, bandwidth, live feed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from shared.messages import PipelineSummary, SignalStats, encode, utcnow
from shared.topics import Channel
from tests.cloud.helpers import (
    MODEL,
    Publisher,
    make_batch,
    make_status,
    topic,
    unique_agent_id,
    wait_until,
)
from tests.dashboard.conftest import ARTIFACTS, LiveServer, Traffic

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def get(live_api: LiveServer, key: str, path: str, **params: Any) -> Any:
    response = httpx.get(
        f"{live_api.url}{path}", params=params, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    return response.json()


def make_summary(agent_id: str) -> PipelineSummary:
    end = utcnow()
    return PipelineSummary(
        agent_id=agent_id,
        pipeline="spindle-vibration",
        window_start=end - timedelta(minutes=1),
        window_end=end,
        samples_in=375,
        inferences=375,
        events_by_label={"bearing_outer_race": 3, "imbalance": 2},
        raw_bytes=375 * 2048 * 4,
        sent_bytes=2100,
        model=MODEL,
    )


def test_the_dashboard_shows_the_fleet_and_a_new_event_live(
    live_api: LiveServer, api_key: str, mqtt: Publisher, page: Page, traffic: Traffic
) -> None:
    agent = unique_agent_id("dash")
    mqtt.publish(topic(agent, Channel.STATUS), encode(make_status(agent)), retain=True)
    mqtt.publish(topic(agent, Channel.SUMMARY), encode(make_summary(agent)))
    for batch in (make_batch(agent, 3), make_batch(agent, 2, label="imbalance")):
        mqtt.publish(topic(agent, Channel.EVENTS), encode(batch))
    wait_until(
        lambda: (
            len(get(live_api, api_key, "/api/v1/events", agent_id=agent)["items"]) == 5
            and get(live_api, api_key, "/api/v1/stats/bandwidth")["total"]["summaries"] == 1
            and get(live_api, api_key, "/api/v1/agents")
        ),
        what="the status, summary and events to be stored",
    )
    report = get(live_api, api_key, "/api/v1/stats/bandwidth")["total"]
    hourly = get(live_api, api_key, "/api/v1/stats/bandwidth/series", bucket="hour")["points"]

    page.goto(f"{live_api.url}/#key={api_key}")

    row = page.locator(f'[data-testid="agent-row"][data-agent-id="{agent}"]')
    expect(row.get_by_test_id("agent-state")).to_have_text("online")
    expect(row.get_by_test_id("agent-pipelines")).to_contain_text("vibration-anomaly@1.0.0")
    # Other tests' retained statuses reach this app too: at least this agent is online.
    expect(page.get_by_test_id("fleet-online")).not_to_have_text("0")
    chart = page.get_by_test_id("chart")
    expect(chart).to_have_attribute("data-series", "2")
    expect(chart).to_have_attribute("data-total", "5")
    expect(chart.locator("canvas")).to_be_visible()
    expect(chart.locator(".u-legend")).to_contain_text("imbalance")
    expect(page.get_by_test_id("bandwidth-raw")).to_have_attribute(
        "data-value", str(report["raw_bytes"])
    )
    expect(page.get_by_test_id("bandwidth-saved")).to_have_attribute(
        "data-value", str(report["saved_bytes"])
    )
    saved = page.get_by_test_id("bandwidth-chart")  # bytes saved per hour, last 24 h
    expect(saved).to_have_attribute("data-saved", str(sum(p["saved_bytes"] for p in hourly)))
    expect(saved.locator("canvas")).to_be_visible()
    expect(page.get_by_test_id("deployments-empty")).to_have_text("no deployments")
    expect(page.get_by_test_id("feed-item")).to_have_count(5)
    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "open")

    new = make_batch(agent, 1, label="impact")
    mqtt.publish(topic(agent, Channel.EVENTS), encode(new))
    newest = page.get_by_test_id("feed-item").first
    expect(newest).to_have_attribute("data-event-id", new.events[0].id)
    expect(newest.get_by_test_id("feed-label")).to_have_text("impact")
    expect(page.get_by_test_id("feed-item")).to_have_count(6)
    expect(chart).to_have_attribute("data-total", "6")  # the chart follows the live feed

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / "dashboard.png", full_page=True)

    # The new event came over the stream: the page listed events once, on load.
    assert len(traffic.api_calls("/api/v1/events")) == 1
    assert "#key" not in page.url, "the key stays in the address bar"
    calls = [r for r in traffic.requests if "/api/" in r.url]
    assert calls
    for request in traffic.requests:
        assert request.url.startswith(f"{live_api.url}/"), f"{request.url} is not this server"
        assert api_key not in request.url
    for request in calls:
        assert request.headers["authorization"] == f"Bearer {api_key}", request.url
    assert traffic.page_errors == []
    # Chromium logs each failed request, and /api/v1/deployments is a 404 until it exists.
    assert [e for e in traffic.console_errors if "status of 404" not in e] == []


def test_the_stream_resumes_after_the_api_restarts_without_losing_events(
    live_api: LiveServer, api_key: str, mqtt: Publisher, page: Page, traffic: Traffic
) -> None:
    agent = unique_agent_id("restart")
    mqtt.publish(topic(agent, Channel.EVENTS), encode(make_batch(agent, 1)))
    wait_until(lambda: get(live_api, api_key, "/api/v1/events", agent_id=agent)["items"])
    page.goto(f"{live_api.url}/#key={api_key}")
    connection = page.get_by_test_id("connection")
    expect(connection).to_have_attribute("data-state", "open")

    live_api.stop()
    # The API is down: the page retries, and ingest will pick these up from its broker session.
    expect(connection).to_have_attribute("data-state", "reconnecting")
    missed = make_batch(agent, 2, label="while-down")
    mqtt.publish(topic(agent, Channel.EVENTS), encode(missed))
    live_api.start()

    for event in missed.events:
        expect(page.locator(f'[data-event-id="{event.id}"]')).to_have_count(1)
    expect(page.get_by_test_id("feed-item")).to_have_count(3)
    expect(connection).to_have_attribute("data-state", "open")
    streams = traffic.api_calls("/api/v1/events/stream")
    assert "last-event-id" in streams[0].headers  # after the events listed on load
    assert len(streams) > 1
    assert all("last-event-id" in r.headers for r in streams[1:]), "resumed without Last-Event-ID"


def test_a_refused_key_shows_the_form_again(
    live_api: LiveServer, api_key: str, page: Page, traffic: Traffic
) -> None:
    # Well formed, never issued: the server looks it up and says it does not know it.
    page.goto(f"{live_api.url}/#key=aiot_0123456789ab_not-a-secret-anyone-was-given")
    expect(page.get_by_test_id("auth-message")).to_contain_text("401: unknown API key")
    expect(page.get_by_test_id("key-form")).to_be_visible()
    expect(page.get_by_test_id("main")).to_be_hidden()
    assert page.evaluate("localStorage.length") == 0, "a refused key was kept"

    page.get_by_test_id("key-input").fill(api_key)
    page.get_by_test_id("key-submit").click()
    expect(page.get_by_test_id("main")).to_be_visible()
    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "open")
    last = traffic.api_calls("/api/v1/agents")[-1]
    assert last.headers["authorization"] == f"Bearer {api_key}"


def test_the_dashboard_shows_a_machines_health_trend_and_line_counts(
    live_api: LiveServer, api_key: str, mqtt: Publisher, page: Page, traffic: Traffic
) -> None:
    machine, camera = unique_agent_id("press"), unique_agent_id("junction")
    end = utcnow()
    for hours_ago, peak in ((3, 0.4), (2, 0.9), (1, 0.3)):
        summary = make_summary(machine).model_copy(
            update={
                "window_start": end - timedelta(hours=hours_ago),
                "window_end": end - timedelta(hours=hours_ago) + timedelta(minutes=1),
                "signals": {"score": SignalStats(min=0.1, mean=peak / 2, max=peak, count=375)},
            }
        )
        mqtt.publish(topic(machine, Channel.SUMMARY), encode(summary))
    crossings = make_batch(camera, 3, label="car")
    directions = ["left_to_right", "left_to_right", "right_to_left"]
    events = [
        e.model_copy(
            update={"kind": "line_crossing", "attributes": {"line": "stop", "direction": d}}
        )
        for e, d in zip(crossings.events, directions, strict=True)
    ]
    mqtt.publish(
        topic(camera, Channel.EVENTS), encode(crossings.model_copy(update={"events": events}))
    )
    wait_until(
        lambda: (
            len(get(live_api, api_key, "/api/v1/events", agent_id=camera)["items"]) == 3
            and get(live_api, api_key, "/api/v1/signals", agent_id=machine, signal="score")[
                "series"
            ]
        ),
        what="the summaries' signals and the crossings to be stored",
    )

    page.goto(f"{live_api.url}/#key={api_key}")

    health = page.locator(f'[data-testid="health-row"][data-agent-id="{machine}"]')
    expect(health).to_have_attribute("data-points", "3")
    expect(health).to_have_attribute("data-peak", "0.9")
    expect(health.get_by_test_id("health-latest")).to_have_text("0.150")
    expect(health.locator("polyline")).to_be_attached()
    stop = page.locator('[data-testid="line-row"][data-line="stop"]')
    expect(stop).to_have_count(2)
    expect(stop.and_(page.locator('[data-direction="left_to_right"]'))).to_have_attribute(
        "data-count", "2"
    )
    assert traffic.page_errors == []
