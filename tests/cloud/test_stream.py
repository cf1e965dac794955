"""``GET /api/v1/events/stream``: events published over MQTT reach a live SSE stream."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx2
import pytest
from fastapi.testclient import TestClient

from shared.messages import EventBatch, encode, new_event_id
from shared.topics import Channel
from tests.cloud.conftest import AppFactory
from tests.cloud.helpers import Publisher, make_batch, topic, unique_agent_id, wait_until

pytestmark = pytest.mark.integration

STREAM = "/api/v1/events/stream"
# Quick polls and heartbeats keep the tests short; a heartbeat also means a read never blocks
# for long, so each wait below is bounded by its deadline.
FAST = {"stream_poll_s": 0.05, "stream_heartbeat_s": 0.1, "stream_settle_s": 0.2}


@dataclass
class Message:
    """One SSE message as a browser's EventSource would see it."""

    id: str
    event: str
    data: dict[str, Any]


@dataclass
class Reader:
    """Parses an SSE body line by line; heartbeats are counted, not returned."""

    response: httpx2.Response
    heartbeats: int = 0
    _lines: Iterator[str] = field(init=False)

    def __post_init__(self) -> None:
        self._lines = self.response.iter_lines()

    def next(self, *, timeout: float = 15.0) -> Message | None:
        """The next event, or None once a heartbeat says the server had nothing more."""
        fields: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        for line in self._lines:
            if time.monotonic() > deadline:
                raise AssertionError(f"no complete event within {timeout} s")
            if line.startswith(":"):
                self.heartbeats += 1
                return None
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
                continue
            if fields:
                return Message(fields["id"], fields["event"], json.loads(fields["data"]))
        raise AssertionError("the stream ended")

    def take(self, count: int, *, timeout: float = 15.0) -> list[Message]:
        """``count`` events, skipping heartbeats, within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        taken: list[Message] = []
        while len(taken) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(taken)} of {count} events within {timeout} s")
            message = self.next(timeout=timeout)
            if message is not None:
                taken.append(message)
        return taken

    def quiet(self, *, heartbeats: int = 3) -> list[Message]:
        """Events that arrive before ``heartbeats`` more heartbeats: what was still to come."""
        extra: list[Message] = []
        seen = self.heartbeats
        while self.heartbeats < seen + heartbeats:
            message = self.next()
            if message is not None:
                extra.append(message)
        return extra


@contextmanager
def stream(
    api: TestClient, headers: dict[str, str] | None = None, **params: str
) -> Iterator[Reader]:
    with api.stream("GET", STREAM, params=params, headers=headers or {}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Reader(response)


def stored(api: TestClient, agent_id: str) -> dict[str, dict[str, Any]]:
    """The events of ``agent_id`` as ``GET /api/v1/events`` lists them, by id."""
    items = api.get("/api/v1/events", params={"agent_id": agent_id, "limit": 1000}).json()["items"]
    return {item["id"]: item for item in items}


def ingestion_order(items: list[dict[str, Any]]) -> list[str]:
    return [item["id"] for item in sorted(items, key=lambda i: (i["received_at"], i["id"]))]


def publish(publisher: Publisher, batch: EventBatch) -> None:
    publisher.publish(topic(batch.agent_id, Channel.EVENTS), encode(batch))


def test_stream_sends_new_events_in_ingestion_order_with_filters(
    make_api: AppFactory, publisher: Publisher
) -> None:
    agent, other = unique_agent_id(), unique_agent_id()
    before = make_batch(agent, 3, label="bearing")
    with make_api(**FAST) as api:
        publish(publisher, before)
        # Stored before the stream opens, which starts from now: it must not send these.
        wait_until(lambda: len(stored(api, agent)) == 3, what="the earlier batch")
        with stream(api, agent_id=agent, label="bearing") as reader:
            first = make_batch(agent, 5, label="bearing")
            camera = make_batch(agent, 3, pipeline="door-camera", label="person")
            foreign = make_batch(other, 2, label="bearing")
            second = make_batch(agent, 4, label="bearing")
            for batch in (first, camera, foreign, second):
                publish(publisher, batch)

            messages = reader.take(9)
            assert reader.quiet() == []

        rest = stored(api, agent)
    # Batches arrive in publish order; within one (same received_at) the id breaks the tie.
    expected = ingestion_order([rest[e.id] for e in first.events]) + ingestion_order(
        [rest[e.id] for e in second.events]
    )
    assert [m.id for m in messages] == expected
    assert all(m.event == "event" for m in messages)
    assert [m.data for m in messages] == [rest[i] for i in expected]


def test_kind_filter(make_api: AppFactory, publisher: Publisher) -> None:
    agent = unique_agent_id()
    batch = make_batch(agent, 4)
    presence = [e.model_copy(update={"kind": "presence"}) for e in batch.events[:2]]
    batch = batch.model_copy(update={"events": presence + batch.events[2:]})
    with make_api(**FAST) as api, stream(api, agent_id=agent, kind="presence") as reader:
        publish(publisher, batch)
        messages = reader.take(2)
        assert reader.quiet() == []

    assert {m.id for m in messages} == {e.id for e in presence}
    assert {m.data["kind"] for m in messages} == {"presence"}


def test_last_event_id_resumes_after_that_event(make_api: AppFactory, publisher: Publisher) -> None:
    agent = unique_agent_id()
    with make_api(**FAST) as api:
        with stream(api, agent_id=agent) as reader:
            publish(publisher, make_batch(agent, 3))
            publish(publisher, make_batch(agent, 3))
            seen = reader.take(6)
        # Published while the dashboard was away: the resumed stream must bring these too.
        missed = make_batch(agent, 2)
        publish(publisher, missed)

        with stream(api, headers={"Last-Event-ID": seen[2].id}, agent_id=agent) as resumed:
            again = resumed.take(5)
            assert resumed.quiet() == []

        rest = stored(api, agent)
    assert [m.id for m in again[:3]] == [m.id for m in seen[3:]]
    assert [m.id for m in again[3:]] == ingestion_order([rest[e.id] for e in missed.events])


def test_unknown_last_event_id_is_a_400_that_says_so(make_api: AppFactory) -> None:
    unknown = new_event_id()
    with make_api(**FAST) as api:
        response = api.get(STREAM, headers={"Last-Event-ID": unknown})
        malformed = api.get(STREAM, headers={"Last-Event-ID": "no-such-event"})

    assert response.status_code == 400
    assert f"{unknown!r} is not a stored event" in response.json()["detail"]
    assert malformed.status_code == 400
    assert malformed.json()["detail"].startswith("Last-Event-ID is not an event id")


def test_streams_over_the_cap_get_503_and_a_closed_stream_frees_its_slot(
    make_api: AppFactory,
) -> None:
    with make_api(stream_max=1, **FAST) as api:
        with stream(api) as reader:
            reader.next()
            refused = api.get(STREAM)
        slots = api.app.state.stream_slots  # type: ignore[attr-defined]
        assert slots.open == 0
        with stream(api) as again:
            assert again.next() is None  # a heartbeat: served, nothing new

    assert refused.status_code == 503
    assert "AIOT_STREAM_MAX" in refused.json()["detail"]
    assert refused.headers["retry-after"] == "5"


def test_malformed_filters_and_last_event_id_are_refused_before_any_sql(
    make_api: AppFactory,
) -> None:
    # A NUL byte reaching PostgreSQL is an error there: each of these was a 500.
    with make_api(ingest_enabled=False) as api:
        for params in ({"agent_id": "gw\x00"}, {"label": "x\x00"}, {"kind": "k" * 129}):
            assert api.get(STREAM, params=params).status_code == 422, params
        response = api.get(STREAM, headers={"Last-Event-ID": "\x00" * 36})
    assert response.status_code == 400
    assert response.json()["detail"].startswith("Last-Event-ID is not an event id")
