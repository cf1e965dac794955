"""Pipeline summaries: accumulation, windows that tile time, and bytes that add up."""

from __future__ import annotations

import itertools
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.delivery.outbox import Outbox, OutboxItem
from edge_agent.delivery.outbox_writer import OutboxWriter
from edge_agent.inference.config import RuntimeConfig
from edge_agent.inference.slot import load_slot
from edge_agent.pipelines.sensor import LEVEL_EVERY, SensorPipeline
from edge_agent.pipelines.summary import SignalAccumulator, SummaryWindow
from edge_agent.sources.machine_physics import MachineSpec, SimulatedMachine
from shared.errors import ConfigError
from shared.messages import Event, ModelRef, PipelineSummary
from tests.edge.conftest import AgentConfigFactory

REF = ModelRef(name="m", version="1", sha256="0" * 64)
WINDOW_BYTES = 2048 * 4


class SteppingClock:
    """Wall-clock time that advances by ``step`` on every reading."""

    def __init__(self, step: float, now: float = 1_800_000_000.0) -> None:
        self.now, self.step = now, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@dataclass
class Counts:
    samples_in: int = 0
    inferences: int = 0
    gated: int = 0
    raw_bytes: int = 0
    sent_bytes: int = 0


def drain(outbox: Outbox) -> list[OutboxItem]:
    """Every stored item in the order the uplink would publish them."""
    items: list[OutboxItem] = []
    while batch := outbox.next_batch(1000):
        items.extend(batch)
    return items


# -- pure accumulation ---------------------------------------------------------------------


@given(st.lists(st.floats(min_value=-1e9, max_value=1e9), min_size=1, max_size=200))
def test_accumulated_stats_are_min_mean_max_of_the_values(values: list[float]) -> None:
    acc = SignalAccumulator()
    half = len(values) // 2
    for v in values[:half]:
        acc.add(v)
    rest = values[half:]
    acc.merge(len(rest), math.fsum(rest), min(rest), max(rest))
    stats = acc.take()
    assert stats is not None
    assert stats.count == len(values)
    assert stats.min == round(min(values), 6)
    assert stats.max == round(max(values), 6)
    assert stats.min <= stats.mean <= stats.max
    assert stats.mean == pytest.approx(math.fsum(values) / len(values), rel=1e-6, abs=1e-6)
    assert acc.take() is None, "take() starts a new window"


def test_mean_of_equal_values_stays_inside_min_and_max() -> None:
    acc = SignalAccumulator()
    for _ in range(3):
        acc.add(0.1)  # 0.1 * 3 / 3 == 0.10000000000000002 in binary floating point
    stats = acc.take()
    assert stats is not None
    assert stats.min == stats.mean == stats.max == 0.1


def test_windows_tile_time_and_report_counter_differences() -> None:
    counts = Counts(samples_in=5, raw_bytes=5 * WINDOW_BYTES)
    window = SummaryWindow.starting(100.0, counts)
    counts.samples_in, counts.inferences, counts.raw_bytes = 15, 10, 15 * WINDOW_BYTES
    counts.sent_bytes = 700
    window.events_by_label["imbalance"] += 2
    window.signal("score").add(0.5)
    first = window.close(end=160.0, counters=counts, agent_id="a", pipeline="p", model=REF)
    counts.samples_in += 1
    second = window.close(end=220.0, counters=counts, agent_id="a", pipeline="p", model=REF)

    assert (first.samples_in, first.inferences, first.raw_bytes) == (10, 10, 10 * WINDOW_BYTES)
    assert first.sent_bytes == 700
    assert first.events_by_label == {"imbalance": 2}
    assert first.signals["score"].count == 1
    assert first.window_end == second.window_start
    assert (second.samples_in, second.inferences, second.sent_bytes) == (1, 0, 0)
    assert second.events_by_label == {}
    assert second.signals == {}, "a signal nobody fed is left out, not reported as zeros"


def test_a_clock_that_steps_back_still_gives_distinct_windows() -> None:
    counts = Counts()
    window = SummaryWindow.starting(100.0, counts)
    first = window.close(end=90.0, counters=counts, agent_id="a", pipeline="p", model=REF)
    second = window.close(end=90.0, counters=counts, agent_id="a", pipeline="p", model=REF)
    assert first.window_start < first.window_end == second.window_start < second.window_end


# -- the pipeline --------------------------------------------------------------------------


def run_pipeline(
    config_factory: AgentConfigFactory, tmp_path: Path, **config: object
) -> tuple[SensorPipeline, list[OutboxItem]]:
    config_ = config_factory(**config)
    p = config_.pipelines[0]
    pipeline = SensorPipeline(
        p,
        load_slot(p.model, RuntimeConfig()),
        agent_id=config_.agent_id,
        clock=SteppingClock(0.01),
    )
    outbox = Outbox(tmp_path / "o.db", max_bytes=10**9, max_age_s=1e12)
    with OutboxWriter(outbox) as writer:
        pipeline.run(writer, threading.Event())
    return pipeline, drain(outbox)


def test_summaries_of_a_run_add_up_to_its_counters_and_bytes(
    agent_config: AgentConfigFactory, tmp_path: Path
) -> None:
    pipeline, items = run_pipeline(agent_config, tmp_path, summary_interval_s=0.5)
    events = [Event.model_validate_json(i.payload) for i in items if i.kind == "event"]
    summary_items = [i for i in items if i.kind == "summary"]
    summaries = [PipelineSummary.model_validate_json(i.payload) for i in summary_items]
    c = pipeline.counters

    assert [i.kind for i in items] == ["event"] * len(events) + ["summary"] * len(summaries)
    assert len(events) == 4
    assert len(summaries) >= 3, "one every 50 readings of the stepping clock, and a last one"
    assert all(
        s.pipeline == "spindle" and s.model == pipeline.slot.current().ref for s in summaries
    )
    for before, after in itertools.pairwise(summaries):
        assert before.window_end == after.window_start
    assert sum(s.samples_in for s in summaries) == c.samples_in == int(30 / (2048 / 12800)) + 1
    assert sum(s.inferences for s in summaries) == c.inferences
    assert sum(s.raw_bytes for s in summaries) == c.raw_bytes == c.samples_in * WINDOW_BYTES
    labels: dict[str, int] = {}
    for s in summaries:
        for label, n in s.events_by_label.items():
            labels[label] = labels.get(label, 0) + n
    assert labels == {"imbalance": 2, "bearing_inner_race": 2}
    # sent = every event's JSON + every summary but the last (a message cannot count itself)
    event_bytes = sum(len(i.payload) for i in items if i.kind == "event")
    summary_bytes = [len(i.payload) for i in summary_items]
    assert sum(s.sent_bytes for s in summaries) == event_bytes + sum(summary_bytes[:-1])
    assert c.sent_bytes == event_bytes + sum(summary_bytes)
    assert c.sent_bytes < c.raw_bytes / 100, "the edge sends a tiny share of what it reads"
    status = pipeline.status()
    assert (status.raw_bytes, status.sent_bytes) == (c.raw_bytes, c.sent_bytes)


def test_summary_signals_are_the_score_and_the_vibration_level(
    agent_config: AgentConfigFactory,
) -> None:
    config = agent_config(summary_interval_s=60)
    p = config.pipelines[0]
    clock = SteppingClock(1.0)
    pipeline = SensorPipeline(
        p, load_slot(p.model, RuntimeConfig()), agent_id=config.agent_id, clock=clock
    )
    machine = SimulatedMachine(MachineSpec(), seed=5)
    windows = np.stack(
        [machine.window() for _ in range(8)] + [machine.window("imbalance") for _ in range(8)]
    )
    pipeline.process_windows(windows[:5])
    for row in windows[5:]:
        pipeline.process_windows(row)

    summary = pipeline.summarize()

    # RMS with the DC removed, of the sampled windows (one healthy, one faulty)
    levels = windows[::LEVEL_EVERY].std(axis=1, dtype=np.float64)
    rms = summary.signals["rms_g"]
    assert rms.count == 2
    assert rms.min == pytest.approx(levels.min(), rel=1e-4)
    assert rms.max == pytest.approx(levels.max(), rel=1e-4)
    assert rms.mean == pytest.approx(levels.mean(), rel=1e-4)
    score = summary.signals["score"]
    assert score.count == 16
    assert 0 <= score.min < 0.5 < score.max <= 1, "healthy windows score low, faulty ones high"


def test_summaries_off_or_without_an_agent_publish_nothing(
    agent_config: AgentConfigFactory, tmp_path: Path
) -> None:
    _, items = run_pipeline(agent_config, tmp_path, summary_interval_s=0)
    assert {i.kind for i in items} == {"event"}
    config = agent_config(summary_interval_s=1)
    p = config.pipelines[0]
    pipeline = SensorPipeline(p, load_slot(p.model, RuntimeConfig()))  # no agent: benchmark, tests
    outbox = Outbox(tmp_path / "other.db", max_bytes=10**9, max_age_s=1e12)
    with OutboxWriter(outbox) as writer:
        pipeline.run(writer, threading.Event())
    assert {i.kind for i in drain(outbox)} == {"event"}
    assert pipeline.counters.raw_bytes == pipeline.counters.samples_in * WINDOW_BYTES


@pytest.mark.parametrize("interval", [-1, 0.01])
def test_summary_interval_is_off_or_sensible(
    agent_config: AgentConfigFactory, interval: float
) -> None:
    with pytest.raises((ConfigError, ValueError), match="summary_interval_s"):
        agent_config(summary_interval_s=interval)
