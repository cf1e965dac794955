"""Health windows: a swapped model that fails at inference or is much slower is rolled back,
and the verdict itself on plain inference records."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edge_agent.delivery.outbox import Outbox
from edge_agent.delivery.outbox_writer import OutboxWriter
from edge_agent.inference.config import RuntimeConfig
from edge_agent.inference.slot import ModelSlot, load_slot
from edge_agent.pipelines.base import InferenceStats
from edge_agent.sources.machine_physics import MachineSpec, SimulatedMachine
from edge_agent.updates.config import UpdatesConfig
from edge_agent.updates.health_watch import (
    MIN_LATENCY_SAMPLES,
    HealthWatch,
    Marks,
    ServingPipeline,
    Verdict,
    judge,
)
from shared.errors import ModelError
from tests.edge.updates.rollout import (
    Rollout,
    last,
    settled,
    stored_events,
    update_while_running,
    wait_until,
)
from tests.model_fixtures import write_nan_model, write_same_model, write_slow_model


def test_model_failing_at_inference_is_rolled_back(rollout: Rollout, tmp_path: Path) -> None:
    config = rollout.config(speed=20.0, health_window_s=30)
    nan_model = write_nan_model(tmp_path / "nan.onnx", "1.2.0")
    live = update_while_running(rollout, config, "1.2.0", nan_model, workdir=tmp_path)
    pipeline, updater, entry, old = live.pipeline, live.updater, live.entry, live.old
    status = last(updater)
    assert status.state == "rolled_back", status.reason
    assert re.match(r"\d+ inference errors in the health window: ", status.reason)
    assert "not finite" in status.reason
    assert pipeline.slot.current() is old
    assert rollout.states[-2:] == ["watching", "rolled_back"]
    events = stored_events(live.outbox)
    assert {e.model for e in events} == {old.ref}
    assert pipeline.counters.inference_errors >= 1
    # The refused entry is not tried again while it stays the same.
    updater.submit(rollout.desired(entry))
    time.sleep(0.3)
    assert last(updater).state == "rolled_back"


def test_model_much_slower_than_the_previous_is_rolled_back(
    rollout: Rollout, tmp_path: Path
) -> None:
    # Two 2048x2048 products per window against a ~0.1 ms model: far beyond the 3x allowed.
    config = rollout.config(speed=20.0, health_window_s=1.0)
    slow_model = write_slow_model(tmp_path / "slow.onnx", "1.4.0")
    live = update_while_running(rollout, config, "1.4.0", slow_model, workdir=tmp_path,
                                windows_after=0)  # fmt: skip
    pipeline, updater, old = live.pipeline, live.updater, live.old
    status = last(updater)
    assert status.state == "rolled_back", status.reason
    assert status.reason.startswith("median inference time ")
    assert "over 3 x the previous model's" in status.reason
    assert pipeline.slot.current() is old
    assert pipeline.counters.inference_errors == 0


def test_nan_output_is_an_inference_error_not_an_event(tmp_path: Path, rollout: Rollout) -> None:
    config = rollout.config()
    pipeline = rollout.pipeline(config)
    nan = write_nan_model(tmp_path / "nan.onnx", "1.2.0")
    spec_config = config.pipelines[0].model.model_copy(update={"path": nan, "version": "1.2.0"})
    pipeline.slot.swap(load_slot(spec_config, RuntimeConfig()).current())
    window = SimulatedMachine(MachineSpec(), seed=1).window()
    with pytest.raises(ModelError, match="not finite"):
        pipeline.process_windows(window)
    assert pipeline.counters.events_out == 0


def test_a_score_beyond_the_contract_is_an_inference_error_and_the_pipeline_goes_on(
    tmp_path: Path, rollout: Rollout
) -> None:
    config = rollout.config()
    pipeline = rollout.pipeline(config)
    huge = write_nan_model(tmp_path / "huge.onnx", "1.3.0", value=-1e12)  # score 1 + 1e12
    spec_config = config.pipelines[0].model.model_copy(update={"path": huge, "version": "1.3.0"})
    pipeline.slot.swap(load_slot(spec_config, RuntimeConfig()).current())
    outbox = Outbox(tmp_path / "o.db", max_bytes=10**9, max_age_s=1e9)
    with OutboxWriter(outbox) as writer:
        pipeline.run(writer, threading.Event())  # returns: the source ended, nothing raised
    assert pipeline.counters.inference_errors > 0
    assert pipeline.counters.events_out == 0
    assert outbox.depth() == 0


def test_restart_during_the_health_window_rolls_back(rollout: Rollout, tmp_path: Path) -> None:
    config = rollout.config(health_window_s=600)
    pipeline = rollout.pipeline(config)
    updater = rollout.updater(config, pipeline)
    entry = rollout.publish("1.1.0", write_same_model(tmp_path / "v110.onnx", "1.1.0"))
    updater.submit(rollout.desired(entry))
    wait_until(settled(updater, "watching", "failed"), "the health window")
    assert pipeline.slot.current().ref.version == "1.1.0"
    updater.stop()  # the agent dies while watching

    again = rollout.pipeline(config)
    restarted = rollout.updater(config, again)
    status = last(restarted)
    assert (status.state, status.version) == ("rolled_back", "1.1.0")
    assert status.reason == "interrupted by a restart during the health window"
    assert again.slot.current().ref.version == "1.0.0"
    restarted.submit(rollout.desired(entry))  # the retained state arrives again
    time.sleep(0.3)
    assert again.slot.current().ref.version == "1.0.0"
    assert last(restarted).state == "rolled_back"


def test_a_pipeline_reports_its_inference_record_as_a_copy(rollout: Rollout) -> None:
    pipeline = rollout.pipeline(rollout.config())
    serving: ServingPipeline = pipeline  # what the updater reads of it, and only that
    machine = SimulatedMachine(MachineSpec(), seed=1)
    pipeline.process_windows(machine.window())
    before = serving.inference_stats()
    pipeline.process_windows(machine.window())
    after = serving.inference_stats()
    assert (before.calls, len(before.latencies), before.errors) == (1, 1, 0)
    assert (after.calls, len(after.latencies), after.errors) == (2, 2, 0)
    assert after.latencies[0] == before.latencies[0]


# The verdict on plain records: what ends a window, and when.

RULES = UpdatesConfig(max_errors=0, max_latency_factor=3.0, latency_floor_ms=1.0)


def test_an_error_beyond_the_allowance_ends_the_window_at_once_quoting_the_first_new_one() -> None:
    marks = Marks(errors=2, calls=100, baseline_s=0.002)
    record = InferenceStats(
        calls=110, errors=3, latencies=(0.002,) * 10, recent_errors=((2, "old"), (3, "new"))
    )
    verdict = judge(record, marks, RULES, over=False)
    assert verdict == Verdict(False, "1 inference errors in the health window: new")


def test_errors_within_the_allowance_wait_for_the_end_of_the_window() -> None:
    marks = Marks(errors=2, calls=100, baseline_s=0.002)
    record = InferenceStats(110, 3, (0.002,) * 10, ((3, "one"),))
    rules = RULES.model_copy(update={"max_errors": 1})
    assert judge(record, marks, rules, over=False) is None
    assert judge(record, marks, rules, over=True) == Verdict(True)


def test_a_model_much_slower_than_the_previous_fails_when_the_window_is_over() -> None:
    marks = Marks(errors=0, calls=100, baseline_s=0.002)
    record = InferenceStats(110, 0, (0.002,) * 100 + (0.010,) * 10, ())
    assert judge(record, marks, RULES, over=False) is None
    assert judge(record, marks, RULES, over=True) == Verdict(
        False,
        "median inference time 10 ms per window in the health window is over 3 x the previous "
        "model's 2 ms",
    )


@pytest.mark.parametrize(
    ("calls", "baseline_s", "new_s"),
    [
        (MIN_LATENCY_SAMPLES - 1, 0.002, 0.010),  # too few times to say
        (10, 0.0, 0.010),  # the previous model's speed is unknown
        (10, 0.0001, 0.0009),  # 9 x slower, but under the 1 ms floor
        (10, 0.002, 0.006),  # exactly 3 x is allowed
    ],
)
def test_a_slower_model_passes_when_the_times_say_too_little(
    calls: int, baseline_s: float, new_s: float
) -> None:
    marks = Marks(errors=0, calls=100, baseline_s=baseline_s)
    record = InferenceStats(100 + calls, 0, (baseline_s,) * 100 + (new_s,) * calls, ())
    assert judge(record, marks, RULES, over=True) == Verdict(True)


@dataclass
class Record:
    """A stand-in pipeline for the watch's bookkeeping: a name and a record that tests set."""

    name: str
    stats: InferenceStats
    slot: ModelSlot = field(init=False)

    def inference_stats(self) -> InferenceStats:
        return self.stats

    def wait_for_gap(self, timeout_s: float) -> bool:
        return False


def test_the_baseline_is_the_running_models_times_since_its_own_swap() -> None:
    watch = HealthWatch(RULES, clock=lambda: 0.0)
    pipeline = Record("spindle", InferenceStats(10, 0, (1.0,) * 10, ()))  # an older, slow model
    assert watch.marks(pipeline) == Marks(errors=0, calls=10, baseline_s=1.0)
    watch.swapped(pipeline)
    pipeline.stats = InferenceStats(16, 1, (1.0,) * 10 + (0.002,) * 6, ((1, "x"),))
    assert watch.marks(pipeline) == Marks(errors=1, calls=16, baseline_s=0.002)
