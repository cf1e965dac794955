"""Messages -> rows or dead letters, and the acks they earn: pure, no broker, no database."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from cloud_api.ingest.acks import agent_acks
from cloud_api.ingest.parse import (
    MAX_PAYLOAD_BYTES,
    Inbound,
    RetainedKey,
    parse,
    seen_at,
    storable,
)
from shared.digests import sha256_bytes
from shared.messages import MAX_EVENTS_PER_BATCH, BatchAck, encode
from shared.topics import Channel
from tests.cloud.helpers import make_batch, make_status, topic

RECEIVED = datetime(2026, 11, 22, 10, 15, 3, tzinfo=UTC)
NOTHING_KEPT: frozenset[RetainedKey] = frozenset()


def inbound(topic_name: str, payload: bytes, *, retain: bool = False) -> Inbound:
    return Inbound(topic_name, payload, 1, 1, retain, RECEIVED.timestamp(), 0)


def test_a_batch_becomes_its_event_rows_and_a_stored_ack() -> None:
    batch = make_batch("press-1", 3).model_copy(update={"batch_id": str(uuid.uuid4())})
    work = parse([inbound(topic("press-1", Channel.EVENTS), encode(batch))], kept=NOTHING_KEPT)
    assert [row.id for row in work.events] == [event.id for event in batch.events]
    assert {row.agent_id for row in work.events} == {"press-1"}
    assert {row.received_at for row in work.events} == {RECEIVED}
    assert work.acks == [("press-1", BatchAck(batch_id=batch.batch_id, outcome="stored"))]
    assert work.dead == []


def test_a_batch_on_another_agents_topic_is_rejected_by_its_batch_id() -> None:
    batch = make_batch("impostor", 1).model_copy(update={"batch_id": str(uuid.uuid4())})
    work = parse([inbound(topic("press-1", Channel.EVENTS), encode(batch))], kept=NOTHING_KEPT)
    assert work.events == []
    [dead] = work.dead
    assert "does not match topic" in dead["reason"]
    [(agent_id, ack)] = work.acks
    assert (agent_id, ack.batch_id, ack.outcome) == ("press-1", batch.batch_id, "rejected")


def test_an_oversized_payload_is_a_dead_letter_before_it_is_parsed() -> None:
    payload = b"x" * (MAX_PAYLOAD_BYTES + 1)
    work = parse([inbound(topic("press-1", Channel.EVENTS), payload)], kept=NOTHING_KEPT)
    [dead] = work.dead
    assert dead["reason"] == f"payload of {len(payload)} bytes is over {MAX_PAYLOAD_BYTES}"
    assert dead["payload_size"] == len(payload)
    assert len(dead["payload"]) < len(payload)  # only the head of it is kept
    assert work.acks == []


def test_a_retained_dead_letter_already_kept_is_not_kept_again() -> None:
    name = topic("press-1", Channel.STATUS)
    payload = json.dumps({"agent_id": "press-1"}).encode()
    first = parse([inbound(name, payload, retain=True)], kept=NOTHING_KEPT)
    assert [row["retained"] for row in first.dead] == [True]
    assert first.retained_dead == [(name, sha256_bytes(payload))]
    again = parse([inbound(name, payload, retain=True)], kept=set(first.retained_dead))
    assert (again.dead, again.retained_dead, again.acks) == ([], [], [])


def test_a_cleared_retained_status_is_ignored() -> None:
    work = parse([inbound(topic("press-1", Channel.STATUS), b"", retain=True)], kept=NOTHING_KEPT)
    assert (work.statuses, work.dead, work.acks) == ([], [], [])


def test_a_retained_status_is_never_fresher_than_its_arrival() -> None:
    future = make_status("press-1", ts=RECEIVED + timedelta(days=3650))
    past = make_status("press-1", ts=RECEIVED - timedelta(hours=1))
    name = topic("press-1", Channel.STATUS)
    assert seen_at(future, inbound(name, b"", retain=True)) == RECEIVED
    assert seen_at(past, inbound(name, b"", retain=True)) == past.ts
    assert seen_at(past, inbound(name, b"")) == RECEIVED  # live: the agent is up now
    assert seen_at(make_status("press-1", state="offline"), inbound(name, b"")) is None


def test_a_reason_is_made_storable() -> None:
    text = storable("bad \x00 byte and \ud800 half")
    assert text == "bad \ufffd byte and ? half"
    text.encode("utf-8")  # PostgreSQL's UTF-8 and the contract refuse lone surrogates


def test_acks_go_to_each_agent_in_messages_of_the_contracts_size() -> None:
    settled = [
        (agent_id, BatchAck(batch_id=str(uuid.uuid4()), outcome="stored"))
        for agent_id in ["a-1"] * (MAX_EVENTS_PER_BATCH + 1) + ["a-2"]
    ]
    messages = list(agent_acks(settled))
    assert [(name, message.agent_id, len(message.acks)) for name, message in messages] == [
        (topic("a-1", Channel.ACKS), "a-1", MAX_EVENTS_PER_BATCH),
        (topic("a-1", Channel.ACKS), "a-1", 1),
        (topic("a-2", Channel.ACKS), "a-2", 1),
    ]
    assert [ack for _, message in messages for ack in message.acks] == [a for _, a in settled]
