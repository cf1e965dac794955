"""Fuzzing ingest through the real broker: bad messages never stop it or the API.

Hypothesis publishes event batches, summaries and statuses to a real Mosquitto, valid ones
interleaved with mutated ones (bit flips, truncations, spliced garbage, raw NUL bytes, huge
numbers, deep nesting, one value of the wrong type or range, a valid message on another
agent's topic), to the real app (its ingest worker and its API) on SQLite and PostgreSQL.
The contract itself is the oracle: what it accepts for the topic's agent must be stored, the
rest must be dead letters, one each; and the API keeps answering 2xx.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from sqlalchemy import func, select

from cloud_api.tables import SummaryRow
from shared.messages import AgentStatus, EventBatch, PipelineSummary, encode
from shared.topics import Channel, Topic
from tests.cloud.helpers import Publisher, make_batch
from tests.integration.conftest import all_events, cloud_client, wait_until
from tests.services import Mosquitto
from tests.shared import strategies

pytestmark = pytest.mark.integration

MODELS: dict[Channel, type[BaseModel]] = {
    Channel.EVENTS: EventBatch,
    Channel.SUMMARY: PipelineSummary,
    Channel.STATUS: AgentStatus,
}
AGENTS_PER_EXAMPLE = 3
MESSAGES = 12
"""At most, per example (hypothesis bounds the data one example may draw)."""
EXAMPLES = 30
NUMBER = re.compile(rb"-?\d+(\.\d+)?([eE][-+]?\d+)?")


@dataclass(frozen=True)
class Message:
    channel: Channel
    agent_id: str
    """The agent whose topic it is published on."""
    payload: bytes


Uplink = EventBatch | PipelineSummary | AgentStatus


def valid_messages(agents: list[str]) -> st.SearchStrategy[tuple[Channel, Uplink]]:
    """A valid message of one of ``agents``, its event ids new (ids are global)."""

    def own(message: Uplink, agent: str) -> Uplink:
        if isinstance(message, EventBatch):
            events = [e.model_copy(update={"id": str(uuid.uuid4())}) for e in message.events]
            return message.model_copy(update={"agent_id": agent, "events": events})
        return message.model_copy(update={"agent_id": agent})

    agent = st.sampled_from(agents)
    return st.one_of(
        st.tuples(st.just(Channel.EVENTS), st.builds(own, strategies.event_batches(3, 6), agent)),
        st.tuples(st.just(Channel.SUMMARY), st.builds(own, strategies.summaries(3, 2), agent)),
        st.tuples(st.just(Channel.STATUS), st.builds(own, strategies.statuses(1), agent)),
    )


@st.composite
def mutated(draw: st.DrawFn, message: Uplink) -> bytes:
    """``payload`` damaged the way a broken gateway, a bad link or an attacker would."""
    payload = encode(message)
    how = draw(st.sampled_from(["flip", "cut", "splice", "nul", "huge", "nest", "value"]))
    size = len(payload)
    if how == "flip":
        damaged = bytearray(payload)
        for _ in range(draw(st.integers(1, 8))):
            damaged[draw(st.integers(0, size - 1))] ^= 1 << draw(st.integers(0, 7))
        return bytes(damaged)
    if how == "cut":
        return payload[: draw(st.integers(1, size - 1))]
    if how == "splice":
        at = draw(st.integers(0, size))
        return payload[:at] + draw(st.binary(min_size=1, max_size=16)) + payload[at:]
    if how == "nul":
        at = draw(st.integers(0, size))
        return payload[:at] + draw(st.sampled_from([b"\x00", b"\\u0000"])) + payload[at:]
    if how == "huge":
        numbers = list(NUMBER.finditer(payload))
        if not numbers:
            return payload + b"9"
        # Event ids are made fresh outside hypothesis, and they hold digits: pick by index, so
        # that replaying an example draws the same choices.
        found = numbers[draw(st.integers(0, 2**16)) % len(numbers)]
        digits = b"9" * draw(st.sampled_from([19, 20, 309, 400, 5000]))
        return (
            payload[: found.start()]
            + draw(st.sampled_from([b"", b"-"]))
            + digits
            + payload[found.end() :]
        )
    if how == "nest":
        depth = draw(st.sampled_from([64, 300, 10_000]))
        return payload[:-1] + b',"deep":' + b"[" * depth + b"]" * depth + b"}"
    path, tokens = draw(st.sampled_from(strategies.MUTATIONS[type(message)]))
    return strategies.with_raw(json.loads(payload), path, draw(st.sampled_from(tokens)))


@st.composite
def traffic(draw: st.DrawFn, agents: list[str]) -> list[Message]:
    """Valid and damaged messages of ``agents``, interleaved; a valid batch comes last."""
    messages: list[Message] = []
    for _ in range(draw(st.integers(MESSAGES // 2, MESSAGES))):
        channel, message = draw(valid_messages(agents))
        agent = message.agent_id
        payload = encode(message)
        kind = draw(st.sampled_from(["valid", "damaged", "damaged", "impostor"]))
        if kind == "damaged":
            payload = draw(mutated(message))
        elif kind == "impostor":  # valid, on another agent's topic
            agent = draw(st.sampled_from([a for a in agents if a != agent]))
        messages.append(Message(channel, agent, payload))
    sentinel = make_batch(agents[0], 3)
    messages.append(Message(Channel.EVENTS, agents[0], encode(sentinel)))
    return messages


@dataclass
class Expected:
    """What the contract says ingest must have done with the traffic."""

    events: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    summaries: dict[str, set[tuple[str, Any]]] = field(default_factory=lambda: defaultdict(set))
    last_status: dict[str, datetime] = field(default_factory=dict)
    dead: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, message: Message) -> None:
        try:
            parsed: Any = MODELS[message.channel].model_validate_json(message.payload)
        except ValidationError:
            parsed = None
        if parsed is None or parsed.agent_id != message.agent_id:
            self.dead[message.agent_id] += 1
        elif isinstance(parsed, EventBatch):
            self.events[message.agent_id].update(event.id for event in parsed.events)
        elif isinstance(parsed, PipelineSummary):
            self.summaries[message.agent_id].add((parsed.pipeline, parsed.window_start))
        else:
            self.last_status[message.agent_id] = parsed.ts


@pytest.fixture
def cloud(database_url: str, broker: Mosquitto, tmp_path: Path) -> Iterator[TestClient]:
    with cloud_client(database_url, broker, tmp_path) as client:
        client.app.state.ingest.wait_connected()  # type: ignore[attr-defined]
        yield client


@pytest.fixture
def publisher(broker: Mosquitto) -> Iterator[Publisher]:
    client = Publisher("127.0.0.1", broker.port).connect()
    yield client
    client.close()


def ok(response: Any) -> Any:
    assert 200 <= response.status_code < 300, (response.request.url, response.text[:500])
    return response.json()


def dead_letters(cloud: TestClient, agents: list[str]) -> dict[str, int]:
    letters = ok(cloud.get("/api/v1/dead-letters", params={"limit": 1000}))["items"]
    counts = {agent: 0 for agent in agents}
    for letter in letters:
        for agent in agents:
            if f"/{agent}/" in letter["topic"]:
                counts[agent] += 1
    return counts


@pytest.mark.slow  # about 11 s per database: in make test's second phase
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)  # fmt: skip
@given(data=st.data())
def test_fuzzed_uplink_never_stops_ingest_or_the_api(
    cloud: TestClient, publisher: Publisher, data: st.DataObject
) -> None:
    agents = [f"fz-{uuid.uuid4().hex[:12]}" for _ in range(AGENTS_PER_EXAMPLE)]
    messages = data.draw(traffic(agents))
    expected = Expected()
    for message in messages:
        expected.add(message)
        publisher.publish(str(Topic(message.agent_id, message.channel)), message.payload)

    def events_of(agent: str) -> set[str]:
        return {event["id"] for event in all_events(cloud, agent_id=agent)}

    # The sentinel is last: once it is stored, ingest has committed everything before it.
    sentinel = json.loads(messages[-1].payload)["events"][0]["id"]
    wait_until(lambda: sentinel in events_of(agents[0]), 30, "the last batch")

    assert dead_letters(cloud, agents) == {agent: expected.dead[agent] for agent in agents}
    for agent in agents:
        assert events_of(agent) == expected.events[agent]
    with cloud.app.state.sessionmaker() as session:  # type: ignore[attr-defined]
        for agent in agents:
            stored = session.scalar(
                select(func.count()).select_from(SummaryRow).where(SummaryRow.agent_id == agent)
            )
            assert stored == len(expected.summaries[agent])
    listed = {agent["agent_id"]: agent for agent in ok(cloud.get("/api/v1/agents"))}
    for agent in agents:
        if agent not in expected.last_status:
            assert agent not in listed
            continue
        described = ok(cloud.get(f"/api/v1/agents/{agent}"))
        assert datetime.fromisoformat(described["status_ts"]) == expected.last_status[agent]
        assert listed[agent] == described
    ok(cloud.get("/api/v1/events", params={"limit": 1000}))
    ok(cloud.get("/healthz"))
