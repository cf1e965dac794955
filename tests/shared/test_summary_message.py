"""The summary message: what round-trips, and what is refused naming the field."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.messages import ModelRef, PipelineStatus, PipelineSummary, SignalStats, encode

MODEL = ModelRef(name="vibration-anomaly", version="1.0.0", sha256="9f" * 32)
START = datetime(2026, 11, 22, 10, 15, tzinfo=UTC)


def make_summary(**overrides: object) -> PipelineSummary:
    fields: dict[str, object] = {
        "agent_id": "press-line-3",
        "pipeline": "spindle-vibration",
        "window_start": START,
        "window_end": START + timedelta(seconds=60),
        "samples_in": 375,
        "inferences": 375,
        "events_by_label": {"bearing_outer_race": 2},
        "signals": {
            "score": SignalStats(min=0.01, mean=0.2, max=0.97, count=375),
            "rms_g": SignalStats(min=0.09, mean=0.4, max=1.84, count=375),
        },
        "raw_bytes": 375 * 2048 * 4,
        "sent_bytes": 1234,
        "model": MODEL,
    }
    fields.update(overrides)
    return PipelineSummary.model_validate(fields)


def test_summary_round_trips_with_its_schema_version() -> None:
    summary = make_summary()
    wire = encode(summary)
    assert json.loads(wire)["schema"] == 1
    assert PipelineSummary.model_validate_json(wire) == summary
    assert summary.gated == 0


def test_a_vision_pipeline_adds_its_own_signals() -> None:
    summary = make_summary(
        gated=300,
        signals={"objects": SignalStats(min=0, mean=1.5, max=4, count=75)},
        events_by_label={"person": 3, "car": 1},
    )
    assert PipelineSummary.model_validate_json(encode(summary)).signals["objects"].max == 4


@pytest.mark.parametrize(
    ("mutate", "complaint"),
    [
        (lambda m: m.update(schema=2), "schema"),
        (lambda m: m.update(bytes_saved=1), "bytes_saved"),
        (lambda m: m.update(agent_id="a/b"), "agent_id"),
        (lambda m: m.update(window_end="2026-11-22T10:16:00"), "window_end"),
        (lambda m: m.update(window_end="2026-11-22T10:14:00Z"), "window_end is before"),
        (lambda m: m.update(raw_bytes=-1), "raw_bytes"),
        (lambda m: m.pop("sent_bytes"), "sent_bytes"),
        (lambda m: m.update(events_by_label={"x": -1}), "events_by_label"),
        (lambda m: m.update(events_by_label={"": 1}), "events_by_label"),
        (lambda m: m["signals"]["score"].update(mean=float("nan")), "mean"),
        (lambda m: m["signals"]["score"].update(count=0), "count"),
        (lambda m: m["signals"]["score"].update(min=2.0), "min <= mean <= max"),
        (lambda m: m["signals"]["score"].update(p99=1.0), "p99"),
        (lambda m: m["signals"].update({"a b": m["signals"]["score"]}), "signals"),
        (lambda m: m.pop("model"), "model"),
    ],
)
def test_malformed_summaries_are_refused_naming_the_field(mutate: object, complaint: str) -> None:
    message = json.loads(encode(make_summary()))
    assert callable(mutate)
    mutate(message)
    with pytest.raises(ValidationError) as error:
        PipelineSummary.model_validate_json(json.dumps(message, allow_nan=True))
    assert complaint in str(error.value)


def test_status_counters_without_bytes_still_validate() -> None:
    """An agent of the previous release reports no byte counters: they default to 0."""
    old = {"name": "p", "model": None, "samples_in": 1, "inferences": 1, "events_out": 0}
    status = PipelineStatus.model_validate(old)
    assert (status.raw_bytes, status.sent_bytes) == (0, 0)


@given(
    values=st.lists(
        st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=1, max_size=50
    ),
    samples=st.integers(min_value=0, max_value=2**40),
)
def test_any_valid_summary_round_trips(values: list[float], samples: int) -> None:
    stats = SignalStats(
        min=min(values), mean=sorted(values)[len(values) // 2], max=max(values), count=len(values)
    )
    summary = make_summary(samples_in=samples, raw_bytes=samples * 8192, signals={"x": stats})
    assert PipelineSummary.model_validate_json(encode(summary)) == summary
