"""The strict contract: each class of bad input is refused, naming the field.

Payloads are raw JSON, as a broker delivers them, so the tests can send what ``json.dumps``
never writes (``1e400``, ``NaN``, ``"\\ud800"``). What the contract accepts, the databases
store: tests/cloud/ingest/test_contract_storage.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from shared.fields import INT64_MAX, INT64_MIN, MAX_ATTRIBUTE_TEXT, MAX_ATTRIBUTES
from shared.messages import (
    MAX_EVENTS_PER_BATCH,
    MAX_PIPELINES,
    MAX_SUMMARY_LABELS,
    Acks,
    AgentStatus,
    Event,
    EventBatch,
    ModelRef,
    PipelineStatus,
    PipelineSummary,
    SignalStats,
    UpdateStatus,
    encode,
    new_event_id,
)
from tests.shared import strategies
from tests.shared.strategies import with_raw

MODEL = ModelRef(name="vibration-anomaly", version="1.0.0", sha256="9f" * 32)
TS = datetime(2026, 11, 22, 10, 15, 2, 871000, tzinfo=UTC)


def batch() -> dict[str, Any]:
    event = Event(
        id=new_event_id(), pipeline="spindle-vibration", kind="anomaly", state="start",
        label="bearing_outer_race", score=0.97, ts=TS, seq=18234, model=MODEL,
        attributes={"rms_g": 1.84, "peak_hz": 162.5, "count": 3, "ok": True, "mode": "run"},
    )  # fmt: skip
    wire = EventBatch(agent_id="press-line-3", batch_id=new_event_id(), sent_at=TS, events=[event])
    document: dict[str, Any] = json.loads(encode(wire))
    return document


def summary() -> dict[str, Any]:
    message = PipelineSummary(
        agent_id="press-line-3", pipeline="spindle-vibration", window_start=TS,
        window_end=TS + timedelta(seconds=60), samples_in=375, inferences=375,
        events_by_label={"bearing_outer_race": 2},
        signals={"score": SignalStats(min=0.01, mean=0.2, max=0.97, count=375)},
        raw_bytes=375 * 8192, sent_bytes=1234, model=MODEL,
    )  # fmt: skip
    document: dict[str, Any] = json.loads(encode(message))
    return document


def status() -> dict[str, Any]:
    update = UpdateStatus(
        deployment_id=7, name="vibration-anomaly", version="2.0.0", state="running", ts=TS
    )
    pipeline = PipelineStatus(
        name="spindle-vibration", model=MODEL, samples_in=10, inferences=10, events_out=2,
        update=update,
    )  # fmt: skip
    message = AgentStatus(
        agent_id="press-line-3", state="online", ts=TS, agent_version="0.1.0", uptime_s=12.5,
        heartbeat_s=30.0, pipelines=[pipeline], outbox_depth=3, outbox_oldest_age_s=1.5,
        ack_rtt_p50_s=0.02, ack_rtt_p99_s=0.2, link_mbps_measured=9.6,
    )  # fmt: skip
    document: dict[str, Any] = json.loads(encode(message))
    return document


KINDS: dict[str, tuple[type[BaseModel], Any]] = {
    "batch": (EventBatch, batch),
    "summary": (PipelineSummary, summary),
    "status": (AgentStatus, status),
}
EVENT = ("events", 0)
SIGNAL = ("signals", "score")
PIPELINE = ("pipelines", 0)


def refusal(kind: str, path: tuple[str | int, ...], token: str) -> str:
    """The error text for the ``kind`` message with ``token`` (raw JSON) at ``path``."""
    model, make = KINDS[kind]
    payload = with_raw(make(), path, token)
    with pytest.raises(ValidationError) as error:
        model.model_validate_json(payload)
    return str(error.value)


def accepted(kind: str, path: tuple[str | int, ...], token: str) -> Any:
    model, make = KINDS[kind]
    return model.model_validate_json(with_raw(make(), path, token))


def loc(*path: str | int) -> str:
    """How pydantic writes a location in its error text."""
    return ".".join(str(step) for step in path)


# -- no coercion ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "path", "token"),
    [
        ("batch", (*EVENT, "score"), '"0.9"'),
        ("batch", (*EVENT, "score"), "true"),
        ("summary", (*SIGNAL, "mean"), "false"),
        ("status", ("uptime_s",), '"12.5"'),
        ("status", ("heartbeat_s",), "true"),
        ("status", ("ack_rtt_p50_s",), '"0.02"'),
    ],
)
def test_a_float_is_a_json_number_not_a_string_or_boolean(
    kind: str, path: tuple[str | int, ...], token: str
) -> None:
    assert loc(*path) in refusal(kind, path, token)


@pytest.mark.parametrize(
    ("kind", "path", "token"),
    [
        ("batch", (*EVENT, "seq"), "true"),
        ("batch", (*EVENT, "seq"), '"18234"'),
        ("batch", (*EVENT, "seq"), "18234.0"),
        ("batch", (*EVENT, "seq"), "1.8234e4"),
        ("summary", ("samples_in",), "true"),
        ("summary", ("events_by_label", "bearing_outer_race"), '"2"'),
        ("summary", (*SIGNAL, "count"), "375.0"),
        ("status", ("outbox_depth",), "false"),
        ("status", (*PIPELINE, "events_out"), '"2"'),
        ("status", (*PIPELINE, "update", "deployment_id"), "7.0"),
    ],
)
def test_an_integer_is_a_json_integer(kind: str, path: tuple[str | int, ...], token: str) -> None:
    assert loc(*path) in refusal(kind, path, token)


@pytest.mark.parametrize(
    ("kind", "path", "token"),
    [
        ("batch", (*EVENT, "label"), "42"),
        ("batch", (*EVENT, "pipeline"), "true"),
        ("status", ("reason",), "1.5"),
        ("status", ("agent_version",), "1"),
    ],
)
def test_a_string_is_a_json_string(kind: str, path: tuple[str | int, ...], token: str) -> None:
    assert loc(*path) in refusal(kind, path, token)


@pytest.mark.parametrize("token", ["true", "1.0", '"1"'])
@pytest.mark.parametrize("kind", ["batch", "summary", "status"])
def test_the_schema_version_is_the_integer_1(kind: str, token: str) -> None:
    assert "schema" in refusal(kind, ("schema",), token)


def test_a_json_integer_is_a_valid_float() -> None:
    """JSON has one number type: ``1`` for a float field is 1.0 (the documented choice)."""
    parsed = accepted("batch", (*EVENT, "score"), "1")
    assert parsed.events[0].score == 1.0
    assert isinstance(parsed.events[0].score, float)


def test_attribute_values_keep_the_type_json_gave_them() -> None:
    document = batch()
    document["events"][0]["attributes"] = {"i": 1, "f": 1.0, "s": "1", "b": True, "z": 0}
    parsed = EventBatch.model_validate_json(json.dumps(document))
    values = parsed.events[0].attributes
    assert [type(values[k]) for k in "ifsbz"] == [int, float, str, bool, int]
    assert (
        json.loads(encode(parsed))["events"][0]["attributes"] == document["events"][0]["attributes"]
    )


def test_numpy_scalars_from_the_edge_become_python_numbers() -> None:
    attributes = {"x": np.float32(1.5), "n": np.int64(3), "big": np.float64(2.5)}
    event = Event.model_validate({**batch()["events"][0], "attributes": attributes})
    assert event.attributes == {"x": 1.5, "n": 3, "big": 2.5}
    assert [type(v) for v in event.attributes.values()] == [float, int, float]


# -- finite floats with sane ranges -----------------------------------------------------


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"])
@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("batch", (*EVENT, "score")),
        ("batch", (*EVENT, "attributes", "rms_g")),
        ("summary", (*SIGNAL, "max")),
        ("status", ("uptime_s",)),
        ("status", ("heartbeat_s",)),
        ("status", ("outbox_oldest_age_s",)),
        ("status", ("ack_rtt_p99_s",)),
    ],
)
def test_floats_are_finite(kind: str, path: tuple[str | int, ...], token: str) -> None:
    assert loc(*path[: 3 if path[0] == "events" else len(path)]) in refusal(kind, path, token)


@pytest.mark.parametrize(
    ("kind", "path", "token"),
    [
        ("batch", (*EVENT, "score"), "1e9"),
        ("batch", (*EVENT, "score"), "-1e9"),
        ("status", ("heartbeat_s",), "0"),
        ("status", ("heartbeat_s",), "86400"),
        ("status", ("uptime_s",), "3155760000"),
        ("summary", (*SIGNAL, "max"), "1.7976931348623157e308"),
        ("batch", (*EVENT, "attributes", "rms_g"), "-1.7976931348623157e308"),
    ],
)
def test_the_edges_of_the_ranges_are_accepted(
    kind: str, path: tuple[str | int, ...], token: str
) -> None:
    accepted(kind, path, token)


@pytest.mark.parametrize(
    ("kind", "path", "token"),
    [
        ("batch", (*EVENT, "score"), "1000000001"),
        ("batch", (*EVENT, "score"), "-1e300"),
        ("status", ("heartbeat_s",), "86400.5"),
        ("status", ("heartbeat_s",), "1e300"),
        ("status", ("heartbeat_s",), "-1"),
        ("status", ("uptime_s",), "3155760001"),
        ("status", ("uptime_s",), "-0.5"),
        ("status", ("outbox_oldest_age_s",), "1e300"),
        ("status", ("ack_rtt_p50_s",), "-1"),
        ("status", ("link_mbps_measured",), "0"),
        ("status", ("link_mbps_measured",), "1000000.5"),
        ("status", ("link_mbps_measured",), "NaN"),
    ],
)
def test_quantities_with_a_meaning_have_a_range(
    kind: str, path: tuple[str | int, ...], token: str
) -> None:
    assert loc(*path) in refusal(kind, path, token)


# -- 64-bit integers --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "path", "token"),
    [
        ("batch", (*EVENT, "seq"), str(INT64_MAX + 1)),
        ("batch", (*EVENT, "seq"), "-1"),
        ("summary", ("raw_bytes",), str(2**64)),
        ("summary", ("gated",), "-1"),
        ("summary", ("events_by_label", "bearing_outer_race"), str(INT64_MAX + 1)),
        ("summary", ("events_by_label", "bearing_outer_race"), "-1"),
        ("summary", (*SIGNAL, "count"), str(INT64_MAX + 1)),
        ("summary", (*SIGNAL, "count"), "0"),
        ("status", ("unacked_batches",), str(INT64_MAX + 1)),
        ("status", (*PIPELINE, "samples_in"), "-1"),
        ("status", (*PIPELINE, "update", "deployment_id"), "0"),
        ("status", (*PIPELINE, "update", "deployment_id"), str(INT64_MAX + 1)),
    ],
)
def test_integers_fit_a_64_bit_column_and_counters_are_not_negative(
    kind: str, path: tuple[str | int, ...], token: str
) -> None:
    assert loc(*path) in refusal(kind, path, token)


@pytest.mark.parametrize("value", [INT64_MAX + 1, INT64_MIN - 1, 10**30])
def test_an_integer_attribute_fits_64_bits_and_never_becomes_a_float(value: int) -> None:
    reason = refusal("batch", (*EVENT, "attributes", "count"), str(value))
    assert "attributes" in reason
    assert "'count'" in reason
    assert "64 bits" in reason


def test_the_64_bit_limits_themselves_are_accepted() -> None:
    parsed = accepted("batch", (*EVENT, "attributes", "count"), str(INT64_MIN))
    assert parsed.events[0].attributes["count"] == INT64_MIN
    assert accepted("batch", (*EVENT, "seq"), str(INT64_MAX)).events[0].seq == INT64_MAX


def test_label_counts_add_up_to_a_64_bit_integer() -> None:
    """The cloud stores their sum in a BIGINT column: each fitting is not enough."""
    document = summary()
    document["events_by_label"] = {"a": INT64_MAX, "b": 1}
    with pytest.raises(ValidationError, match="events_by_label adds up"):
        PipelineSummary.model_validate_json(json.dumps(document))
    document["events_by_label"] = {"a": INT64_MAX - 1, "b": 1}
    PipelineSummary.model_validate_json(json.dumps(document))


# -- text that PostgreSQL can hold ------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("batch", (*EVENT, "label")),
        ("batch", (*EVENT, "attributes", "mode")),
        ("status", ("reason",)),
        ("status", ("agent_version",)),
        ("status", (*PIPELINE, "update", "reason")),
    ],
)
def test_text_has_no_nul(kind: str, path: tuple[str | int, ...]) -> None:
    reason = refusal(kind, path, '"bad\\u0000text"')
    assert loc(*path[:3] if path[0] == "events" else path) in reason
    assert "NUL" in reason


@pytest.mark.parametrize(
    ("kind", "container"),
    [
        ("batch", (*EVENT, "attributes")),
        ("summary", ("events_by_label",)),
        ("summary", ("signals",)),
    ],
)
def test_dict_keys_have_no_nul(kind: str, container: tuple[str | int, ...]) -> None:
    model, make = KINDS[kind]
    document = make()
    node = document
    for step in container:
        node = node[step]
    value = next(iter(node.values()))
    node["bad\x00key"] = value
    with pytest.raises(ValidationError) as error:
        model.model_validate_json(json.dumps(document))
    assert str(container[-1]) in str(error.value)


@pytest.mark.parametrize("token", ['"\\ud800"', '"\\udc00x"', '"a\\ud83d"'])
def test_a_lone_surrogate_in_json_is_refused(token: str) -> None:
    assert "Invalid JSON" in refusal("batch", (*EVENT, "label"), token)


@pytest.mark.parametrize(
    "change",
    [
        {"label": "bad\ud800"},
        {"attributes": {"mode": "\udfff"}},
        {"attributes": {"\ud800": 1}},
    ],
)
def test_a_lone_surrogate_from_python_is_refused(change: dict[str, Any]) -> None:
    """A Python str can hold one (json.loads of "\\ud800" makes it); UTF-8 cannot encode it."""
    with pytest.raises(ValidationError) as error:
        Event.model_validate({**batch()["events"][0], **change})
    assert next(iter(change)) in str(error.value)


def test_astral_characters_and_control_characters_are_fine() -> None:
    label = "😀𝄞\x01\u2028" * 32
    parsed = accepted("batch", (*EVENT, "label"), json.dumps(label))
    assert parsed.events[0].label == label


# -- times ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "1700000000",  # a unix time
        '"1700000000"',
        "1.7e9",
        '"2026-11-22T10:15:02"',  # naive
        '"2026-11-22"',
        '"1969-12-31T23:59:59.999999Z"',
        '"1970-01-01T00:30:00+01:00"',  # 1969 in UTC
        '"9999-12-31T23:00:00-05:00"',  # year 10000 in UTC: astimezone would overflow
        '"0001-01-01T00:00:00+05:00"',  # year 0 in UTC
        '"2026-13-01T00:00:00Z"',
        "true",
    ],
)
@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("batch", ("sent_at",)),
        ("batch", (*EVENT, "ts")),
        ("summary", ("window_start",)),
        ("status", ("ts",)),
        ("status", (*PIPELINE, "update", "ts")),
    ],
)
def test_times_are_iso_8601_with_an_offset_within_1970_to_9999_utc(
    kind: str, path: tuple[str | int, ...], token: str
) -> None:
    assert loc(*path) in refusal(kind, path, token)


@pytest.mark.parametrize(
    "token",
    [
        '"1970-01-01T00:00:00Z"',
        '"1969-12-31T19:00:00-05:00"',
        '"9999-12-31T23:59:59.999999Z"',
        '"9999-12-31T23:59:59.999999+23:59"',
        '"2026-11-22T10:15:02.871+05:45"',
    ],
)
def test_times_at_the_edges_are_accepted_with_their_offset_kept(token: str) -> None:
    parsed = accepted("batch", (*EVENT, "ts"), token)
    sent = datetime.fromisoformat(json.loads(token))
    assert parsed.events[0].ts == sent
    assert parsed.events[0].ts.utcoffset() == sent.utcoffset()


def test_a_time_python_cannot_convert_is_a_validation_error() -> None:
    late = datetime(9999, 12, 31, 23, tzinfo=timezone(-timedelta(hours=5)))
    with pytest.raises(ValidationError, match="between 1970-01-01 and 9999-12-31"):
        Event.model_validate({**batch()["events"][0], "ts": late})


# -- sizes and nesting ------------------------------------------------------------------


def test_at_most_32_attributes() -> None:
    too_many = {f"a{n}": n for n in range(MAX_ATTRIBUTES + 1)}
    reason = refusal("batch", (*EVENT, "attributes"), json.dumps(too_many))
    assert "attributes" in reason
    accepted("batch", (*EVENT, "attributes"), json.dumps(dict(list(too_many.items())[:-1])))


@pytest.mark.parametrize("token", ['{"a": 1}', "[1, 2]", "null", "[]", "{}"])
def test_attribute_values_are_flat(token: str) -> None:
    assert "'mode'" in refusal("batch", (*EVENT, "attributes", "mode"), token)


@pytest.mark.parametrize(
    ("kind", "path", "token"),
    [
        ("batch", (*EVENT, "attributes", "mode"), json.dumps("x" * (MAX_ATTRIBUTE_TEXT + 1))),
        ("batch", (*EVENT, "attributes"), json.dumps({"k" * 65: 1})),
        ("batch", (*EVENT, "label"), json.dumps("x" * 129)),
        ("batch", (*EVENT, "label"), '""'),
        ("status", ("reason",), json.dumps("x" * 257)),
        ("status", ("agent_version",), json.dumps("x" * 33)),
        ("summary", ("events_by_label",), json.dumps({"x" * 129: 1})),
    ],
)
def test_strings_are_bounded(kind: str, path: tuple[str | int, ...], token: str) -> None:
    assert loc(*path[:3] if path[0] == "events" else path) in refusal(kind, path, token)


@pytest.mark.parametrize(
    ("kind", "path", "size"),
    [
        ("batch", ("events",), MAX_EVENTS_PER_BATCH + 1),
        ("status", ("pipelines",), MAX_PIPELINES + 1),
        ("summary", ("events_by_label",), MAX_SUMMARY_LABELS + 1),
    ],
)
def test_lists_and_dicts_are_bounded(kind: str, path: tuple[str, ...], size: int) -> None:
    model, make = KINDS[kind]
    document = make()
    if path == ("events_by_label",):
        document["events_by_label"] = {f"l{n}": 1 for n in range(size)}
    else:
        document[path[0]] = [document[path[0]][0]] * size
    with pytest.raises(ValidationError) as error:
        model.model_validate_json(json.dumps(document))
    assert path[0] in str(error.value)


def test_deep_nesting_is_refused_by_the_parser() -> None:
    assert "Invalid JSON" in refusal(
        "batch", (*EVENT, "attributes", "mode"), "[" * 5000 + "]" * 5000
    )


def test_acks_are_strict_too() -> None:
    ack = {"batch_id": new_event_id(), "outcome": "stored", "reason": ""}
    Acks.model_validate_json(json.dumps({"schema": 1, "agent_id": "a", "acks": [ack]}))
    for bad in ({"reason": "x\x00"}, {"outcome": 1}, {"batch_id": 7}):
        with pytest.raises(ValidationError) as error:
            Acks.model_validate_json(
                json.dumps({"schema": 1, "agent_id": "a", "acks": [{**ack, **bad}]})
            )
        assert next(iter(bad)) in str(error.value)


# -- what is accepted round-trips, through JSON and through a stored dict ---------------


@settings(max_examples=60, deadline=None)
@given(message=st.one_of(strategies.event_batches(), strategies.summaries(), strategies.statuses()))
def test_accepted_messages_round_trip_through_json_and_python(message: BaseModel) -> None:
    """The cloud reads stored JSON back with ``model_validate`` (rollout reads statuses)."""
    model = type(message)
    assert model.model_validate_json(encode(message)) == message
    assert model.model_validate(message.model_dump(mode="json", by_alias=True)) == message
