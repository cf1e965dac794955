"""Bad input becomes a dead letter with the reason, and ingest keeps going."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shared.messages import encode
from shared.topics import Channel
from tests.cloud.helpers import (
    REFUSED_LABEL,
    Publisher,
    make_batch,
    refuse_label_in_database,
    topic,
    unique_agent_id,
    wait_until,
)

pytestmark = pytest.mark.integration


def dead_letters_of(api: TestClient, agent_id: str) -> list[dict[str, Any]]:
    response = api.get("/api/v1/dead-letters", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return [item for item in response.json()["items"] if f"/{agent_id}/" in item["topic"]]


def test_malformed_payloads_are_dead_lettered_and_ingest_continues(
    api: TestClient, publisher: Publisher
) -> None:
    agent = unique_agent_id()
    events_topic = topic(agent, Channel.EVENTS)
    wrong_schema = json.dumps({"schema": 1, "agent_id": agent, "events": "nope"}).encode()
    impostor = encode(make_batch(unique_agent_id("impostor"), 2))
    publisher.publish(events_topic, b"\xff not json at all")
    publisher.publish(events_topic, wrong_schema)
    publisher.publish(events_topic, impostor)
    publisher.publish(topic(agent, Channel.STATUS), b'{"state": "online"}')
    good = make_batch(agent, 4)
    publisher.publish(events_topic, encode(good))

    wait_until(
        lambda: len(api.get("/api/v1/events", params={"agent_id": agent}).json()["items"]) == 4,
        what="the valid batch after the bad ones",
    )

    def four_letters() -> list[dict[str, Any]] | None:
        found = dead_letters_of(api, agent)
        return found if len(found) >= 4 else None

    letters = wait_until(four_letters, what="four dead letters")

    assert len(letters) == 4
    by_payload = {letter["payload"]: letter for letter in letters}
    not_json = by_payload["\ufffd not json at all"]
    assert "Invalid JSON" in not_json["reason"]
    assert not_json["payload_size"] == len(b"\xff not json at all")
    schema_reason = by_payload[wrong_schema.decode()]["reason"]
    assert "sent_at" in schema_reason
    assert "events" in schema_reason
    assert "does not match topic" in by_payload[impostor.decode()]["reason"]
    assert "AgentStatus" in by_payload['{"state": "online"}']["reason"]
    assert [letter["id"] for letter in letters] == sorted(
        (letter["id"] for letter in letters), reverse=True
    ), "newest first"
    assert api.get("/api/v1/events", params={"agent_id": unique_agent_id()}).json()["items"] == []
    assert "aiot_ingest_dead_letters_total 4.0" in api.get("/metrics").text


def test_a_payload_the_database_refuses_is_dead_lettered(
    api: TestClient, publisher: Publisher
) -> None:
    """Valid for the schema, refused by the database (a trigger: the schema lets nothing
    through that a database refuses by itself)."""
    with api.app.state.sessionmaker() as session:  # type: ignore[attr-defined]
        refuse_label_in_database(session.get_bind().engine)
    agent = unique_agent_id()
    refused = make_batch(agent, 2, label=REFUSED_LABEL)
    publisher.publish(topic(agent, Channel.EVENTS), encode(refused))
    good = make_batch(agent, 3)
    publisher.publish(topic(agent, Channel.EVENTS), encode(good))

    def three_events() -> list[dict[str, Any]] | None:
        found: list[dict[str, Any]] = api.get("/api/v1/events", params={"agent_id": agent}).json()[
            "items"
        ]
        return found if len(found) >= 3 else None

    items = wait_until(three_events, what="the valid batch")

    stored = {item["id"] for item in items}
    assert {event.id for event in good.events} == stored
    letters = wait_until(lambda: dead_letters_of(api, agent), what="the refused batch")
    assert "database refused" in letters[0]["reason"]
