"""Events published over MQTT appear in ``GET /api/v1/events``, once each, page by page."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shared.messages import encode, utcnow
from shared.topics import Channel
from tests.cloud.conftest import AppFactory
from tests.cloud.helpers import (
    Publisher,
    ingest_of,
    make_batch,
    topic,
    unique_agent_id,
    wait_until,
)
from tests.services import Mosquitto

pytestmark = pytest.mark.integration


def events_of(api: TestClient, **params: Any) -> list[dict[str, Any]]:
    response = api.get("/api/v1/events", params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def wait_for_events(api: TestClient, agent_id: str, count: int) -> list[dict[str, Any]]:
    def enough() -> list[dict[str, Any]] | None:
        items = events_of(api, agent_id=agent_id)
        return items if len(items) >= count else None

    return wait_until(enough, what=f"{count} events of {agent_id}")


def test_published_events_are_listed_with_filters(api: TestClient, publisher: Publisher) -> None:
    agent = unique_agent_id()
    start = utcnow() - timedelta(minutes=10)
    vib = make_batch(agent, 20, pipeline="spindle-vibration", label="bearing", start=start)
    cam = make_batch(
        agent,
        10,
        pipeline="door-camera",
        label="person",
        kind="object",
        start=start + timedelta(minutes=1),
    )
    for batch in (vib, cam):
        publisher.publish(topic(agent, Channel.EVENTS), encode(batch))

    items = wait_for_events(api, agent, 30)

    assert len(items) == 30
    first = next(item for item in items if item["id"] == vib.events[0].id)
    assert first["model_name"] == "vibration-anomaly"
    assert first["model_version"] == "1.0.0"
    assert first["attributes"] == {"rms_g": 1.84, "peak_hz": 162.5}
    assert first["ts"].startswith(start.strftime("%Y-%m-%dT%H:%M:%S"))
    assert {i["id"] for i in events_of(api, agent_id=agent, pipeline="door-camera")} == {
        e.id for e in cam.events
    }
    assert len(events_of(api, agent_id=agent, label="bearing")) == 20
    assert {i["id"] for i in events_of(api, agent_id=agent, kind="object")} == {
        e.id for e in cam.events
    }
    window = events_of(
        api,
        agent_id=agent,
        since=(start + timedelta(milliseconds=5)).isoformat(),
        until=(start + timedelta(milliseconds=15)).isoformat(),
    )
    assert [i["seq"] for i in window] == list(range(14, 4, -1))
    assert events_of(api, agent_id=unique_agent_id()) == []


def test_pages_walk_every_event_once_newest_first(api: TestClient, publisher: Publisher) -> None:
    agent = unique_agent_id()
    start = utcnow()
    batches = [make_batch(agent, 25, start=start + timedelta(seconds=i)) for i in range(4)]
    # Two events at the same instant: the id must break the tie without losing either.
    batches.append(make_batch(agent, 1, start=start))
    for batch in batches:
        publisher.publish(topic(agent, Channel.EVENTS), encode(batch))
    published = {event.id for batch in batches for event in batch.events}
    wait_for_events(api, agent, len(published))

    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"agent_id": agent, "limit": 7}
        if cursor is not None:
            params["cursor"] = cursor
        page = api.get("/api/v1/events", params=params).json()
        assert len(page["items"]) <= 7
        seen.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break

    ids = [item["id"] for item in seen]
    assert len(ids) == len(set(ids)), "a page repeated an event"
    assert set(ids) == published
    keys = [(item["ts"], item["id"]) for item in seen]
    assert keys == sorted(keys, reverse=True)


def test_republished_batch_is_stored_once(api: TestClient, publisher: Publisher) -> None:
    agent = unique_agent_id()
    payload = encode(make_batch(agent, 10))
    worker = ingest_of(api)
    publisher.publish(topic(agent, Channel.EVENTS), payload)
    publisher.publish(topic(agent, Channel.EVENTS), payload)

    wait_until(lambda: worker.duplicates >= 10, what="the second copy to be ingested")

    assert len(events_of(api, agent_id=agent)) == 10
    metrics = api.get("/metrics").text
    assert "aiot_ingest_duplicate_events_total 10.0" in metrics


def test_bad_cursor_is_a_400_that_says_so(api: TestClient) -> None:
    response = api.get("/api/v1/events", params={"cursor": "not-a-cursor"})
    assert response.status_code == 400
    assert "cursor" in response.json()["detail"]


@pytest.mark.parametrize("limit", [0, 1001])
def test_limit_is_bounded(api: TestClient, limit: int) -> None:
    assert api.get("/api/v1/events", params={"limit": limit}).status_code == 422


def test_events_published_while_ingest_is_down_arrive_after_restart(
    make_api: AppFactory, publisher: Publisher
) -> None:
    agent = unique_agent_id()
    with make_api():
        pass  # the broker now holds ingest's persistent session
    batch = make_batch(agent, 5)
    publisher.publish(topic(agent, Channel.EVENTS), encode(batch))

    with make_api() as api:
        items = wait_for_events(api, agent, 5)

    assert {item["id"] for item in items} == {event.id for event in batch.events}


def test_ingest_works_on_mqtt_3_1_1(make_api: AppFactory, publisher: Publisher) -> None:
    agent = unique_agent_id()
    with make_api(mqtt_protocol="3.1.1") as api:
        publisher.publish(topic(agent, Channel.EVENTS), encode(make_batch(agent, 3)))
        assert len(wait_for_events(api, agent, 3)) == 3


def test_ingest_reconnects_after_a_broker_restart(
    make_api: AppFactory, own_broker: Mosquitto
) -> None:
    agent = unique_agent_id()
    with make_api(mqtt_url=own_broker.url) as api:
        worker = ingest_of(api)
        own_broker.stop()
        wait_until(lambda: not worker.connected, what="ingest to notice the outage")
        assert api.get("/healthz").status_code == 503
        own_broker.start()
        worker.wait_connected(timeout=30)
        publisher = Publisher("127.0.0.1", own_broker.port).connect()
        try:
            publisher.publish(topic(agent, Channel.EVENTS), encode(make_batch(agent, 2)))
            assert len(wait_for_events(api, agent, 2)) == 2
        finally:
            publisher.close()
