"""The wire contract: what round-trips, and what is refused with a reason."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from pydantic import ValidationError

from shared.messages import (
    MAX_SCORE,
    AgentStatus,
    Event,
    EventBatch,
    ModelRef,
    PipelineStatus,
    encode,
    new_event_id,
)
from tests.shared import strategies

MODEL = ModelRef(name="vibration-anomaly", version="1.0.0", sha256="9f" * 32)


def make_event(**overrides: object) -> Event:
    fields: dict[str, object] = {
        "id": new_event_id(),
        "pipeline": "spindle-vibration",
        "kind": "anomaly",
        "state": "start",
        "label": "bearing_outer_race",
        "score": 0.97,
        "ts": datetime(2026, 11, 22, 10, 15, 2, 871000, tzinfo=UTC),
        "seq": 18234,
        "model": MODEL,
        "attributes": {"rms_g": 1.84, "peak_hz": 162.5},
    }
    fields.update(overrides)
    return Event.model_validate(fields)


def make_batch(events: list[Event]) -> EventBatch:
    return EventBatch(agent_id="press-line-3", sent_at=datetime.now(UTC), events=events)


def test_batch_round_trips_through_json() -> None:
    batch = make_batch([make_event(), make_event(state="end")])
    wire = encode(batch)
    assert json.loads(wire)["schema"] == 1
    assert EventBatch.model_validate_json(wire) == batch


def test_design_example_is_accepted() -> None:
    wire = {
        "schema": 1,
        "agent_id": "press-line-3",
        "sent_at": "2026-11-22T10:15:03.120Z",
        "events": [
            {
                "id": new_event_id(),
                "pipeline": "spindle-vibration",
                "kind": "anomaly",
                "state": "start",
                "label": "bearing_outer_race",
                "score": 0.97,
                "ts": "2026-11-22T10:15:02.871Z",
                "seq": 18234,
                "model": {"name": "vibration-anomaly", "version": "1.0.0", "sha256": "9f" * 32},
                "attributes": {"rms_g": 1.84, "peak_hz": 162.5},
            }
        ],
    }
    batch = EventBatch.model_validate_json(json.dumps(wire))
    assert batch.events[0].model.version == "1.0.0"


@pytest.mark.parametrize(
    ("mutate", "complaint"),
    [
        (lambda m: m.update(schema=2), "schema"),
        (lambda m: m.update(extra_field=1), "extra_field"),
        (lambda m: m.update(agent_id="a/b"), "agent_id"),
        (lambda m: m.update(events=[]), "events"),
        (lambda m: m["events"][0].update(score=float("nan")), "score"),
        (lambda m: m["events"][0].update(ts="2026-11-22T10:15:02"), "ts"),
        (lambda m: m["events"][0].update(id="not-a-uuid"), "id"),
        (lambda m: m["events"][0].update(state="begin"), "state"),
        (lambda m: m["events"][0]["model"].update(sha256="xyz"), "sha256"),
        (lambda m: m["events"][0].pop("model"), "model"),
    ],
)
def test_malformed_batches_are_refused_naming_the_field(mutate: object, complaint: str) -> None:
    message = json.loads(encode(make_batch([make_event()])))
    assert callable(mutate)
    mutate(message)
    with pytest.raises(ValidationError) as error:
        EventBatch.model_validate_json(json.dumps(message, allow_nan=True))
    assert complaint in str(error.value)


def test_not_json_is_refused() -> None:
    with pytest.raises(ValidationError):
        EventBatch.model_validate_json(b"\x00garbage")


def test_status_round_trips_and_last_will_needs_only_identity() -> None:
    status = AgentStatus(
        agent_id="press-line-3",
        state="online",
        ts=datetime.now(UTC),
        pipelines=[
            PipelineStatus(
                name="spindle-vibration", model=MODEL, samples_in=10, inferences=10, events_out=2
            )
        ],
        outbox_depth=3,
    )
    assert AgentStatus.model_validate_json(encode(status)) == status
    will = AgentStatus(
        agent_id="press-line-3", state="offline", reason="connection lost", ts=status.ts
    )
    assert AgentStatus.model_validate_json(encode(will)).state == "offline"


def test_event_ids_are_unique_valid_uuid7_and_time_ordered() -> None:
    ids = [new_event_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    parsed = [uuid.UUID(i) for i in ids]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in parsed)
    stamps = [u.int >> 80 for u in parsed]
    assert stamps == sorted(stamps)


@given(
    label=strategies.text(1, 128),
    score=strategies.finite_floats(-MAX_SCORE, MAX_SCORE),
    seq=strategies.int64(0),
    attributes=strategies.attributes(),
)
def test_any_valid_event_round_trips(
    label: str, score: float, seq: int, attributes: dict[str, bool | int | float | str]
) -> None:
    event = make_event(label=label, score=score, seq=seq, attributes=attributes)
    assert Event.model_validate_json(encode(event)) == event
