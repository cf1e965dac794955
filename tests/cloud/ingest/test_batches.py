"""The Rust twin of ``EventBatch`` (``batches.py``) against the contract itself.

What the twin accepts the contract accepts, with the same rows; what it refuses goes through
the contract, so ``parse`` makes the same rows, dead letters (same reasons) and acks with the
twin as without it. Checked on the contract's own strategies (valid batches at the edges of
every rule, and each of its refused mutations) and on bytes damaged at random.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cloud_api.ingest import parse as parse_module
from cloud_api.ingest.batches import fast_event_batch
from cloud_api.ingest.parse import Inbound, Work, event_row, fast_event_row, parse
from shared.messages import EventBatch, encode
from shared.topics import Channel
from tests.cloud.helpers import make_batch, topic
from tests.shared import strategies

RECEIVED = datetime(2026, 11, 22, 10, 15, 3, tzinfo=UTC)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _contract_rows(payload: bytes) -> list[Any] | None:
    try:
        batch = EventBatch.model_validate_json(payload)
    except ValidationError:
        return None
    return [_comparable(event_row(batch.agent_id, e, RECEIVED)) for e in batch.events]


def _comparable(row: Any) -> tuple[Any, ...]:
    # A datetime compares equal across offsets: the offset the agent sent must be kept too.
    return tuple((v, v.isoformat()) if isinstance(v, datetime) else (v, type(v)) for v in row)


def assert_twin_agrees(payload: bytes) -> None:
    """The twin accepts only what the contract accepts, with the same rows, batch id and
    agent; and ``parse`` with the twin equals ``parse`` with the contract alone."""
    fast = fast_event_batch(payload)
    if fast is not None:
        expected = _contract_rows(payload)
        assert expected is not None, "the twin accepted a batch the contract refuses"
        rows = [fast_event_row(fast["agent_id"], e, RECEIVED) for e in fast["events"]]
        assert [_comparable(row) for row in rows] == expected
        contract = EventBatch.model_validate_json(payload)
        assert (fast["agent_id"], fast.get("batch_id")) == (contract.agent_id, contract.batch_id)
    assert _parsed(payload, twin=True) == _parsed(payload, twin=False)


def _parsed(payload: bytes, *, twin: bool) -> tuple[Any, ...]:
    at = RECEIVED.timestamp()
    message = Inbound(topic("press-1", Channel.EVENTS), payload, 1, 1, False, at, 0)
    with pytest.MonkeyPatch.context() as patch:
        if not twin:
            patch.setattr(parse_module, "fast_event_batch", lambda _payload: None)
        work: Work = parse([message], kept=frozenset())
    return [_comparable(row) for row in work.events], work.dead, work.acks


def _own(batch: EventBatch) -> bytes:
    return encode(batch.model_copy(update={"agent_id": "press-1"}))


def test_the_usual_batch_takes_the_twin() -> None:
    payload = encode(make_batch("press-1", 50))
    assert fast_event_batch(payload) is not None
    assert_twin_agrees(payload)


@SETTINGS
@given(strategies.event_batches(4))
def test_valid_batches_make_the_same_rows(batch: EventBatch) -> None:
    assert_twin_agrees(_own(batch))


@SETTINGS
@given(strategies.refused_payloads(strategies.event_batches(3)))
def test_refused_batches_are_refused_with_the_contracts_reason(refused: Any) -> None:
    assert fast_event_batch(refused.payload) is None
    assert_twin_agrees(refused.payload)


@SETTINGS
@given(strategies.event_batches(3), st.data())
def test_damaged_bytes_get_the_contracts_answer(batch: EventBatch, data: st.DataObject) -> None:
    payload = bytearray(_own(batch))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(payload) - 1))
        if data.draw(st.booleans()):
            payload[at] ^= 1 << data.draw(st.integers(0, 7))
        else:
            payload[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    assert_twin_agrees(bytes(payload))


def _with(path: tuple[str | int, ...], value: str) -> bytes:
    return strategies.with_raw(json.loads(encode(make_batch("press-1", 2))), path, value)


TIMES = [
    "1970-01-01T00:00:00Z", "1970-01-01T00:30:00+01:00", "1971-01-01T00:00:00+23:59",
    "9999-12-31T23:59:59.999999Z", "9999-12-31T23:00:00-05:00", "9998-12-31T23:00:00-23:59",
    "2026-11-22T10:15:03.123456+05:45", "2026-11-22t10:15:03z", "2026-11-22 10:15:03Z",
    "20261122T101503Z", "1700000000", "1700000000.5", "2026-11-22", "02026-11-22T10:15:03Z",
    "2026-11-22T10:15:03", " 2026-11-22T10:15:03Z",
]  # fmt: skip
"""Times the contract checks in Python: the year's edges, offsets, unix times, bare dates."""

EDGES = [
    *[(("events", 0, "ts"), json.dumps(text)) for text in TIMES],
    (("events", 0, "ts"), "1700000000"),
    (("sent_at",), '"1970-01-01T00:00:00Z"'),
    # Attributes: duplicate names, the count limit with duplicates, JSON's number types.
    (("events", 0, "attributes"), '{"a": 1, "a": "x", "b": 2}'),
    (("events", 0, "attributes"), "{" + ", ".join(f'"k{n % 32}": {n}' for n in range(33)) + "}"),
    (("events", 0, "attributes"), "{" + ", ".join(f'"k{n}": {n}' for n in range(32)) + "}"),
    (("events", 0, "attributes"), '{"i": 1, "f": 1.0, "e": 1e2, "s": "1", "t": true, "z": -0.0}'),
    (("events", 0, "attributes"), '{"max": 9223372036854775807, "min": -9223372036854775808}'),
    (("events", 0, "attributes"), '{"over": 9223372036854775808}'),
    (("events", 0, "attributes"), '{"big": 99999999999999999999999.0}'),
    (("events", 0, "attributes"), json.dumps({"k" * 64: "😀" * 256})),
    (("events", 0, "attributes"), json.dumps({"k" * 65: 1})),
    (("events", 0, "attributes"), json.dumps({"a": "x" * 257})),
    (("events", 0, "attributes"), "{}"),
    (("events", 0, "label"), json.dumps("😀" * 128)),
    (("events", 0, "label"), json.dumps("x\u2028y")),
    (("events", 0, "score"), "1"),
    (("events", 0, "score"), "-1000000000"),
    (("events", 0, "seq"), "0"),
    (("schema",), "1"),
    (("schema_version",), "1"),
    (("batch_id",), "null"),
    (("events", 0, "model", "extra"), "1"),
]


@pytest.mark.parametrize(("path", "value"), EDGES)
def test_the_contracts_edges_get_the_contracts_answer(
    path: tuple[str | int, ...], value: str
) -> None:
    assert_twin_agrees(_with(path, value))


@example(b'{"schema": 1}')
@given(st.binary(max_size=64))
@SETTINGS
def test_any_bytes_get_the_contracts_answer(payload: bytes) -> None:
    assert_twin_agrees(payload)
