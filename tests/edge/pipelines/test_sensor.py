"""The pipeline on the real model and the simulated machine, without a broker."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from edge_agent.config import AgentConfig
from edge_agent.delivery.outbox import Outbox
from edge_agent.delivery.outbox_writer import OutboxWriter
from edge_agent.inference.config import RuntimeConfig
from edge_agent.inference.slot import load_slot
from edge_agent.pipelines.sensor import SensorPipeline, model_attributes
from edge_agent.sources.machine_physics import MachineSpec, SimulatedMachine
from shared.messages import Event
from tests.edge.conftest import AgentConfigFactory


def make_pipeline(config: AgentConfig) -> SensorPipeline:
    p = config.pipelines[0]
    return SensorPipeline(p, load_slot(p.model, RuntimeConfig()))


def test_one_injected_fault_is_exactly_one_start_and_one_end(
    agent_config: AgentConfigFactory, tmp_path: Path
) -> None:
    config = agent_config(schedule=[{"at_s": 4, "duration_s": 3, "fault": "bearing_outer_race"}])
    pipeline = make_pipeline(config)
    outbox = Outbox(tmp_path / "o.db", max_bytes=10**9, max_age_s=1e9)
    with OutboxWriter(outbox) as writer:
        pipeline.run(writer, threading.Event())
    events = pipeline_events(outbox)
    assert [(e.state, e.label) for e in events] == [
        ("start", "bearing_outer_race"),
        ("end", "bearing_outer_race"),
    ]
    start, end = events
    period = 2048 / 12800
    assert [start.seq, end.seq] == [0, 1]  # the pipeline's own event count, not a window's
    assert isinstance(end.attributes["duration_s"], float)
    assert 3 - 2 * period <= end.attributes["duration_s"] <= 3 + 2 * period
    assert {"rms_g", "peak_hz"} <= set(start.attributes)
    assert start.model == pipeline.slot.current().ref
    assert start.pipeline == "spindle"
    assert pipeline.counters.samples_in == pipeline.counters.inferences == int(30 / period) + 1
    assert pipeline.counters.events_out == 2


def test_seq_continues_across_runs_and_an_incident_left_open_ends_at_the_next_start(
    agent_config: AgentConfigFactory, tmp_path: Path
) -> None:
    # The fault lasts past the end of the source: the first run is "killed" with it open.
    config = agent_config(schedule=[{"at_s": 4, "duration_s": 60, "fault": "misalignment"}])
    path = tmp_path / "o.db"
    first = make_pipeline(config)
    outbox = Outbox(path, max_bytes=10**9, max_age_s=1e9)
    with OutboxWriter(outbox) as writer:
        for sample in first.source.samples(threading.Event()):
            events = first.process_sample(sample)
            if events:
                first._emit(writer, events)  # the run loop's path, without its closing events
    (start,) = pipeline_events(outbox)
    assert (start.state, start.seq) == ("start", 0)
    assert outbox.next_seq("spindle") == 1
    assert [e.id for e in outbox.open_incidents("spindle")] == [start.id]
    outbox.close()

    reopened = Outbox(path, max_bytes=10**9, max_age_s=1e9)
    second = make_pipeline(agent_config(schedule=[]))
    with OutboxWriter(reopened) as writer:
        second.run(writer, threading.Event())
    later = [e for e in pipeline_events(reopened) if e.id != start.id]
    assert [(e.state, e.seq) for e in later] == [("end", 1)]
    (end,) = later
    assert end.attributes["closed_by"] == "restart"
    assert (end.label, end.model) == (start.label, start.model)
    assert end.ts >= start.ts
    assert reopened.open_incidents("spindle") == []
    assert reopened.next_seq("spindle") == 2


def pipeline_events(outbox: Outbox) -> list[Event]:
    return [Event.model_validate_json(i.payload) for i in outbox.next_batch(1000)]


def test_process_windows_takes_plain_arrays_and_continues_the_sequence(
    agent_config: AgentConfigFactory,
) -> None:
    pipeline = make_pipeline(agent_config())
    machine = SimulatedMachine(MachineSpec(), seed=5)
    healthy = np.stack([machine.window() for _ in range(8)])
    faulty = np.stack([machine.window("misalignment") for _ in range(8)])
    assert pipeline.process_windows(healthy) == []
    events = pipeline.process_windows(faulty)
    assert [(e.state, e.label, e.seq) for e in events] == [("start", "misalignment", 10)]
    events = pipeline.process_windows(healthy)
    assert [(e.state, e.seq) for e in events] == [("end", 18)]
    assert pipeline.counters.inferences == 24


def test_window_by_window_gives_what_a_batch_gives(agent_config: AgentConfigFactory) -> None:
    """One window per call takes the pipeline's one-window path; a batch takes the general
    one: the same events, labels, scores, attributes and summary either way (up to how ORT's
    kernels for a batch round)."""
    machine = SimulatedMachine(MachineSpec(), seed=5)
    windows = np.stack([machine.window("misalignment" if 8 <= i < 16 else None) for i in range(32)])
    batched, one_by_one = make_pipeline(agent_config()), make_pipeline(agent_config())
    by_batch = batched.process_windows(windows)
    by_window = [e for w in windows for e in one_by_one.process_windows(w)]

    def shape(events: list[Event]) -> list[tuple[object, ...]]:
        return [(e.state, e.label, e.score, e.seq, e.attributes) for e in events]

    assert shape(by_window) == shape(by_batch)
    assert len(by_batch) == 2
    assert one_by_one.counters.inferences == batched.counters.inferences == 32
    assert one_by_one.counters.inference_calls == 32
    for name in ("score", "rms_g"):  # ORT's batch-of-32 kernels round a little differently
        single, batch = one_by_one._summary.signals[name], batched._summary.signals[name]
        assert single.count == batch.count, name
        assert (single.total, single.low, single.high) == pytest.approx(
            (batch.total, batch.low, batch.high), rel=1e-5
        ), name


def test_close_ends_an_open_event_at_shutdown(agent_config: AgentConfigFactory) -> None:
    pipeline = make_pipeline(agent_config())
    machine = SimulatedMachine(MachineSpec(), seed=5)
    pipeline.process_windows(np.stack([machine.window("impact") for _ in range(5)]))
    (event,) = pipeline.close()
    assert event.state == "end"
    assert event.attributes["closed_by"] == "shutdown"
    assert pipeline.close() == []


def test_channels_with_any_names_give_summaries_and_events_the_wire_takes(
    tmp_path: Path,
) -> None:
    """A CSV's columns are channels whatever they are called ("Flow [l/s]"); summaries and
    events name their levels in the wire's alphabet, so none is refused."""
    import threading

    import numpy as np

    from edge_agent.inference.slot import load_slot
    from edge_agent.pipelines.config import PipelineConfig
    from models.normal import fit_normal
    from models.normal_files import write_model
    from models.window_features import WindowSpec

    columns = ("Flow [l/s]", "pressure (bar)", "Flow {l/s}")
    rng = np.random.default_rng(1)
    normal = rng.normal(size=(600, 3))
    spec = WindowSpec(columns, size=8, hop=4)
    write_model(fit_normal(normal, spec, name="odd", version="1"), tmp_path / "models")
    replay = np.vstack([rng.normal(size=(200, 3)), 25 + rng.normal(size=(40, 3))])
    lines = ['"Flow [l/s]",pressure (bar),Flow {l/s}'] + [",".join(map(str, r)) for r in replay]
    (tmp_path / "replay.csv").write_text("\n".join(lines) + "\n")
    config = PipelineConfig.model_validate({
        "name": "odd",
        "source": {"type": "csv", "path": str(tmp_path / "replay.csv"), "rate_hz": 10, "speed": 0},
        "window": {"size": 8, "hop": 4},
        "model": {"name": "odd", "manifest": str(tmp_path / "models" / "manifest.json")},
    })  # fmt: skip
    pipeline = SensorPipeline(config, load_slot(config.model, config.runtime), agent_id="a1")
    events = []
    for sample in pipeline.source.samples(threading.Event()):
        events += pipeline.process_sample(sample)
    summary = pipeline.summarize()  # validates against the wire contract
    assert set(summary.signals) >= {"Flow__l_s__mean", "pressure__bar__mean", "Flow__l_s__2_mean"}
    assert pipeline.counters.inference_errors == 0
    starts = [e for e in events if e.state == "start"]
    assert starts
    assert "pressure__bar__mean" in starts[0].attributes


def test_an_event_carries_its_window_s_level_and_peak_as_the_model_computed_them(
    agent_config: AgentConfigFactory,
) -> None:
    """The vibration model gives ``rms_g`` and ``peak_hz`` beside its probabilities; an event
    carries those of its window (fed alone or in a batch), not a spectrum of the pipeline's."""
    machine = SimulatedMachine(MachineSpec(), seed=3)
    windows = np.stack([machine.window("imbalance") for _ in range(6)]).astype(np.float32)
    runtime = make_pipeline(agent_config()).slot.current().runtime
    _, rms, peak = runtime.run_all(windows)
    expected = [(round(float(r), 6), round(float(p), 6)) for r, p in zip(rms, peak, strict=True)]

    one_by_one = make_pipeline(agent_config())
    starts = [
        (i, e) for i, w in enumerate(windows) for e in one_by_one.process_windows(w)
        if e.state == "start"
    ]  # fmt: skip
    batched = make_pipeline(agent_config())
    (start,) = [e for e in batched.process_windows(windows) if e.state == "start"]

    ((index, alone),) = starts
    assert (alone.attributes["rms_g"], alone.attributes["peak_hz"]) == expected[index]
    assert (start.attributes["rms_g"], start.attributes["peak_hz"]) == expected[index]


def test_model_attributes_are_rounded_and_a_non_finite_one_is_left_out() -> None:
    outputs: list[npt.NDArray[Any]] = [
        np.array([0.5, 1.23456789], dtype=np.float32),
        np.array([1.0, np.nan], dtype=np.float32),
        np.array([3, 7], dtype=np.int64),
    ]

    attributes = model_attributes(("level", "broken", "count"), outputs, 1)

    assert attributes == {"level": 1.234568, "count": 7}
    assert type(attributes["count"]) is int
