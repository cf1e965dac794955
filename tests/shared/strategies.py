"""Hypothesis strategies for wire messages the contract accepts, pushed towards its edges.

Integers at the 64-bit limits, floats up to 1e308, text with astral characters at its
maximum length, times at 1970 and year 9999 with offsets up to +-23:59. The cloud's property
tests store what these generate in SQLite and PostgreSQL; the shared tests round-trip it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st
from pydantic import BaseModel

from shared.fields import (
    EARLIEST,
    INT64_MAX,
    INT64_MIN,
    LATEST,
    MAX_ATTRIBUTE_NAME,
    MAX_ATTRIBUTE_TEXT,
    MAX_ATTRIBUTES,
    MAX_HEARTBEAT_S,
    MAX_SCORE,
    MAX_SECONDS,
)
from shared.messages import (
    MAX_LINK_MBPS,
    MAX_SUMMARY_LABELS,
    MAX_SUMMARY_SIGNALS,
    AgentStatus,
    Event,
    EventBatch,
    ModelRef,
    PipelineStatus,
    PipelineSummary,
    SignalStats,
    UpdateStatus,
    encode,
)

MAX_FLOAT = sys.float_info.max

_CHARS = st.characters(exclude_characters="\x00", exclude_categories=["Cs"])
_ASTRAL = st.characters(min_codepoint=0x10000, exclude_categories=["Cs"])
_NAME = r"[A-Za-z0-9_.:-]{1,64}"


def text(min_size: int = 0, max_size: int = 64) -> st.SearchStrategy[str]:
    """Text without NUL or surrogates: any plane, control characters, full length."""
    return st.one_of(
        st.text(_CHARS, min_size=min_size, max_size=max_size),
        st.text(_ASTRAL, min_size=max_size, max_size=max_size),
        st.text(
            st.sampled_from("\x01\x1f\x7f\u2028\ufeff\uffff\"\\'é€𝄞😀"),
            min_size=max(1, min_size),
            max_size=max_size,
        ),
    )


def int64(lo: int = INT64_MIN, hi: int = INT64_MAX) -> st.SearchStrategy[int]:
    edges = sorted(
        {v for v in (lo, lo + 1, hi - 1, hi, 0, 2**53 + 1, -(2**53) - 1) if lo <= v <= hi}
    )
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi))


def finite_floats(lo: float = -MAX_FLOAT, hi: float = MAX_FLOAT) -> st.SearchStrategy[float]:
    edges = [v for v in (lo, hi, 0.0, -0.0, 5e-324, 1e300, -1e300, 1e16, 2.0**53) if lo <= v <= hi]
    return st.one_of(
        st.sampled_from(edges),
        st.floats(lo, hi, allow_nan=False, allow_infinity=False),
    )


def names() -> st.SearchStrategy[str]:
    return st.from_regex(_NAME, fullmatch=True)


def agent_ids() -> st.SearchStrategy[str]:
    return st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", fullmatch=True)


_OFFSETS = st.one_of(
    st.sampled_from([0, 23 * 60 + 59, -(23 * 60 + 59), 330, -210]),
    st.integers(-(23 * 60 + 59), 23 * 60 + 59),
).map(lambda minutes: timezone(timedelta(minutes=minutes)))


@st.composite
def datetimes(draw: st.DrawFn) -> datetime:
    """An aware time within 1970..9999 in UTC, written with any offset that can show it."""
    instant = draw(
        st.one_of(
            st.sampled_from([EARLIEST, LATEST]),
            st.datetimes(EARLIEST.replace(tzinfo=None), LATEST.replace(tzinfo=None)).map(
                lambda naive: naive.replace(tzinfo=UTC)
            ),
        )
    )
    zone = draw(_OFFSETS)
    try:
        return instant.astimezone(zone)
    except OverflowError:  # 9999-12-31T23:00Z at +05:00 is in year 10000: write it in UTC
        return instant


def models() -> st.SearchStrategy[ModelRef]:
    return st.builds(
        ModelRef,
        name=names(),
        version=names(),
        sha256=st.from_regex(r"[0-9a-f]{64}", fullmatch=True),
    )


def attribute_values() -> st.SearchStrategy[bool | int | float | str]:
    return st.one_of(st.booleans(), int64(), finite_floats(), text(max_size=MAX_ATTRIBUTE_TEXT))


def attributes(max_size: int = MAX_ATTRIBUTES) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(text(max_size=MAX_ATTRIBUTE_NAME), attribute_values(), max_size=max_size)


def events(attributes_max: int = MAX_ATTRIBUTES) -> st.SearchStrategy[Event]:
    return st.builds(
        Event,
        id=st.uuids().map(str),
        pipeline=names(),
        kind=names(),
        state=st.sampled_from(["start", "update", "end", "instant"]),
        label=text(1, 128),
        score=finite_floats(-MAX_SCORE, MAX_SCORE),
        ts=datetimes(),
        seq=int64(0),
        model=models(),
        attributes=attributes(attributes_max),
    )


def event_batches(
    max_events: int = 5, attributes_max: int = MAX_ATTRIBUTES
) -> st.SearchStrategy[EventBatch]:
    return st.builds(
        EventBatch,
        agent_id=agent_ids(),
        batch_id=st.none() | st.uuids().map(str),
        sent_at=datetimes(),
        events=st.lists(events(attributes_max), min_size=1, max_size=max_events),
    )


@st.composite
def signal_stats(draw: st.DrawFn) -> SignalStats:
    low, mean, high = sorted(draw(st.lists(finite_floats(), min_size=3, max_size=3)))
    return SignalStats(min=low, mean=mean, max=high, count=draw(int64(1)))


@st.composite
def label_counts(draw: st.DrawFn, max_size: int = MAX_SUMMARY_LABELS) -> dict[str, int]:
    """Counts by label that add up to at most INT64_MAX (the cloud stores their sum)."""
    labels = draw(st.lists(text(1, 128), max_size=max_size, unique=True))
    budget, counts = INT64_MAX, {}
    for label in labels:
        counts[label] = draw(int64(0, budget))
        budget -= counts[label]
    return counts


@st.composite
def summaries(draw: st.DrawFn, max_labels: int = 8, max_signals: int = 4) -> PipelineSummary:
    start, end = sorted(draw(st.lists(datetimes(), min_size=2, max_size=2)))
    return PipelineSummary(
        agent_id=draw(agent_ids()),
        batch_id=draw(st.none() | st.uuids().map(str)),
        pipeline=draw(names()),
        window_start=start,
        window_end=end,
        samples_in=draw(int64(0)),
        inferences=draw(int64(0)),
        gated=draw(int64(0)),
        events_by_label=draw(label_counts(min(max_labels, MAX_SUMMARY_LABELS))),
        signals=draw(
            st.dictionaries(names(), signal_stats(), max_size=min(max_signals, MAX_SUMMARY_SIGNALS))
        ),
        raw_bytes=draw(int64(0)),
        sent_bytes=draw(int64(0)),
        model=draw(models()),
    )


def seconds(hi: float = MAX_SECONDS) -> st.SearchStrategy[float]:
    return finite_floats(0.0, hi)


def update_statuses() -> st.SearchStrategy[UpdateStatus]:
    return st.builds(
        UpdateStatus,
        deployment_id=st.none() | int64(1),
        name=names(),
        version=names(),
        state=st.sampled_from(["downloading", "running", "failed", "rolled_back"]),
        reason=text(max_size=512),
        ts=datetimes(),
    )


def pipeline_statuses() -> st.SearchStrategy[PipelineStatus]:
    return st.builds(
        PipelineStatus,
        name=names(),
        model=st.none() | models(),
        samples_in=int64(0),
        inferences=int64(0),
        events_out=int64(0),
        gated=int64(0),
        errors=int64(0),
        raw_bytes=int64(0),
        sent_bytes=int64(0),
        filtered=int64(0),
        update=st.none() | update_statuses(),
    )


def statuses(max_pipelines: int = 3) -> st.SearchStrategy[AgentStatus]:
    return st.builds(
        AgentStatus,
        agent_id=agent_ids(),
        state=st.sampled_from(["online", "offline"]),
        reason=text(max_size=256),
        ts=datetimes(),
        agent_version=text(max_size=32),
        uptime_s=seconds(),
        heartbeat_s=seconds(MAX_HEARTBEAT_S),
        pipelines=st.lists(pipeline_statuses(), max_size=max_pipelines),
        outbox_depth=int64(0),
        outbox_oldest_age_s=seconds(),
        unacked_batches=int64(0),
        ack_rtt_p50_s=st.none() | seconds(),
        ack_rtt_p99_s=st.none() | seconds(),
        link_mbps_measured=st.none() | finite_floats(5e-324, MAX_LINK_MBPS),
    )


_MARK = "@@raw-json@@"


def with_raw(document: Any, path: tuple[str | int, ...], token: str) -> bytes:
    """``document`` as JSON with the value at ``path`` replaced by the raw JSON ``token``.

    Raw, so that a test can send what ``json.dumps`` will not write: ``1e400``, ``NaN``,
    ``"\\ud800"``, ``1.0`` for an int, a key that repeats.
    """
    copy = json.loads(json.dumps(document))
    *parents, last = path
    node = copy
    for step in parents:
        node = node[step]
    node[last] = _MARK
    return json.dumps(copy, ensure_ascii=False).replace(json.dumps(_MARK), token).encode()


# -- what the contract refuses -----------------------------------------------------------

Path = tuple[str | int, ...]

BAD_FLOATS = ['"0.9"', "true", "NaN", "Infinity", "-Infinity", "1e400", "null", "[0.5]", "{}"]
BAD_COUNTS = ['"1"', "true", "1.0", "1e3", "-1", str(INT64_MAX + 1), "null", "NaN"]
BAD_TIMES = [
    "1700000000", '"1700000000"', '"2026-11-22T10:15:02"', '"2026-11-22"', "true", "null",
    '"9999-12-31T23:00:00-05:00"', '"0001-01-01T00:00:00+05:00"', '"1969-12-31T23:59:59Z"',
    '"2026-02-30T00:00:00Z"', '"2026-11-22T25:00:00Z"',
]  # fmt: skip
BAD_TEXT = ['"bad\\u0000text"', '"\\ud800"', '"\\udc00x"', "42", "true", "null", "[]"]
BAD_ATTRIBUTES = [
    '{"a": {"b": 1}}', '{"a": [1]}', '{"a": null}', '{"a": 9223372036854775808}',
    '{"a": -9223372036854775809}', '{"a": NaN}', '{"a": 1e400}', '{"\\u0000": 1}',
    '{"a": "\\u0000"}', '{"a": "\\ud800"}', json.dumps({f"k{n}": n for n in range(33)}),
    json.dumps({"a": "x" * 257}), json.dumps({"k" * 65: 1}), "[]", '"a=1"',
    '{"a": ' + "[" * 300 + "]" * 300 + "}",
]  # fmt: skip
BAD_SCHEMA = ["2", "0", "true", "1.0", '"1"', "null"]
_EVENT: Path = ("events", 0)

MUTATIONS: dict[type[BaseModel], list[tuple[Path, list[str]]]] = {
    EventBatch: [
        (("schema",), BAD_SCHEMA),
        (("agent_id",), ['"a/b"', '""', "7", '"' + "a" * 65 + '"']),
        (("sent_at",), BAD_TIMES),
        (("batch_id",), ['"not-a-uuid"', "1"]),
        (("events",), ["[]", "{}", "null", "[1]"]),
        (("extra",), ["1"]),
        ((*_EVENT, "id"), ['"not-a-uuid"', "1", "null"]),
        ((*_EVENT, "score"), [*BAD_FLOATS, "1e10", "-1e300"]),
        ((*_EVENT, "seq"), BAD_COUNTS),
        ((*_EVENT, "ts"), BAD_TIMES),
        ((*_EVENT, "label"), [*BAD_TEXT, '""', json.dumps("x" * 129)]),
        ((*_EVENT, "pipeline"), ['"a b"', '""', "1"]),
        ((*_EVENT, "state"), ['"begin"', "1"]),
        ((*_EVENT, "attributes"), BAD_ATTRIBUTES),
        ((*_EVENT, "model", "sha256"), ['"xyz"', "null"]),
        ((*_EVENT, "model"), ["null", "{}"]),
        ((*_EVENT, "extra"), ["1"]),
    ],
    PipelineSummary: [
        (("schema",), BAD_SCHEMA),
        (("window_start",), BAD_TIMES),
        (("window_end",), BAD_TIMES),
        (("samples_in",), BAD_COUNTS),
        (("raw_bytes",), BAD_COUNTS),
        (("gated",), BAD_COUNTS),
        (
            ("events_by_label",),
            [
                '{"x": -1}',
                '{"\\u0000": 1}',
                '{"x": 1.0}',
                '{"x": "1"}',
                '{"": 1}',
                '{"a": 9223372036854775807, "b": 1}',
                '{"x": 9223372036854775808}',
                "[]",
            ],
        ),
        (
            ("signals",),
            [
                '{"s": {"min": NaN, "mean": 0, "max": 1, "count": 1}}',
                '{"s": {"min": 2, "mean": 0, "max": 1, "count": 1}}',
                '{"s": {"min": 0, "mean": 0, "max": 1, "count": 0}}',
                '{"s": {"min": 0, "mean": 0, "max": 1e400, "count": 1}}',
                '{"a b": {"min": 0, "mean": 0, "max": 1, "count": 1}}',
                '{"s": {"min": "0", "mean": 0, "max": 1, "count": 1}}',
            ],
        ),
        (("model",), ["null"]),
    ],
    AgentStatus: [
        (("schema",), BAD_SCHEMA),
        (("state",), ['"sleeping"', "true"]),
        (("ts",), BAD_TIMES),
        (("heartbeat_s",), [*BAD_FLOATS, "86401", "1e300", "-1"]),
        (("uptime_s",), [*BAD_FLOATS, "1e300", "-0.5"]),
        (("outbox_oldest_age_s",), ["1e300", "-1", "Infinity"]),
        (("ack_rtt_p50_s",), ["-1", "NaN", '"0.1"']),
        (("reason",), [*BAD_TEXT, json.dumps("x" * 257)]),
        (("agent_version",), [*BAD_TEXT, json.dumps("x" * 33)]),
        (("outbox_depth",), BAD_COUNTS),
        (("unacked_batches",), BAD_COUNTS),
        (("pipelines",), ['[{"name": "p"}]', "{}", "[null]"]),
    ],
}
"""Where each uplink message can go wrong, and the raw JSON that makes it wrong."""


@dataclass(frozen=True)
class Refused:
    """A payload the contract refuses, as the agent ``agent_id`` would publish it."""

    model: type[BaseModel]
    agent_id: str
    payload: bytes


@st.composite
def refused_payloads(draw: st.DrawFn, message: st.SearchStrategy[BaseModel]) -> Refused:
    """A valid message with one value made invalid (``MUTATIONS``), or the message cut short.

    Each mutation is invalid whatever the rest of the message holds, and a proper prefix of a
    JSON object is never JSON, so every payload drawn here must be refused.
    """
    valid = draw(message)
    whole = encode(valid)
    if draw(st.integers(0, 9)) == 0:
        payload = whole[: draw(st.integers(1, len(whole) - 1))]  # empty clears a status
    else:
        path, tokens = draw(st.sampled_from(MUTATIONS[type(valid)]))
        payload = with_raw(json.loads(whole), path, draw(st.sampled_from(tokens)))
    return Refused(type(valid), str(getattr(valid, "agent_id", "")), payload)
