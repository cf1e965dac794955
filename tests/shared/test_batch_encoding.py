"""The uplink splices stored events into a batch: the bytes must be pydantic's own."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.messages import Event, EventBatch, ModelRef, encode, encode_event_batch, new_event_id


def test_spliced_batch_is_byte_for_byte_the_validated_one() -> None:
    model = ModelRef(name="m", version="1.0.0", sha256="ab" * 32)
    events = [
        Event(
            id=new_event_id(),
            pipeline="p",
            kind="anomaly",
            state="start",
            label="bearing \u00e9",
            score=0.5 + i,
            ts=datetime(2026, 12, 3, 10, 0, i, 123456, tzinfo=UTC),
            seq=i,
            model=model,
            attributes={"rms_g": 1.5, "n": i, "ok": True, "note": 'a "quote"'},
        )
        for i in range(3)
    ]
    sent_at = datetime(2026, 12, 3, 10, 0, 5, tzinfo=UTC)
    batch_id = new_event_id()
    spliced = encode_event_batch("press-3", batch_id, sent_at, [encode(e) for e in events])
    whole = EventBatch(agent_id="press-3", batch_id=batch_id, sent_at=sent_at, events=events)
    assert spliced == encode(whole)
    assert EventBatch.model_validate_json(spliced) == whole
