"""Shadow evaluation on the edge, with real ORT sessions, real signed artifacts over HTTP and the
real updater: the figures count exactly the inputs the pipeline scored, a candidate that alarms
on everything shows it, a candidate whose input does not fit is refused with its reason, and
a shadow never makes an event."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from edge_agent.delivery.outbox import Outbox
from edge_agent.inference.config import ModelConfig as RolloutModel
from edge_agent.inference.config import RuntimeConfig
from edge_agent.inference.slot import load_slot
from edge_agent.pipelines.sensor import SensorPipeline
from edge_agent.pipelines.vision import VisionPipeline
from edge_agent.updates.shadow import Shadow, fit_problem
from edge_agent.updates.shadow_figures import Agreement
from edge_agent.updates.updater import Updater
from shared.messages import DesiredModel, DesiredShadow, DesiredState, ShadowReport, utcnow
from shared.signing import ModelManifest, SignedManifest
from tests.edge.conftest import model_section
from tests.edge.pipelines.test_vision import gate_config
from tests.edge.updates.rollout import (
    PIPELINE,
    Rollout,
    running_pipeline,
    stored_events,
    wait_until,
)
from tests.model_fixtures import MODEL_NAME, sign_manifest, write_nan_model, write_same_model


def windows(pipeline: SensorPipeline, count: int) -> np.ndarray:
    """``count`` windows of the pipeline's own simulated machine."""
    samples = pipeline.source.samples(threading.Event())
    return np.stack([s.data for s in itertools.islice(samples, count)])


def shadowed(
    rollout: Rollout, version: str, model: Path, *, share: float = 1.0, window_s: float = 600.0
) -> tuple[SensorPipeline, Updater]:
    """A pipeline whose updater was asked to shadow ``model`` as ``version``."""
    config = rollout.config()
    pipeline = rollout.pipeline(config)
    updater = rollout.updater(config, pipeline)
    entry = rollout.publish(version, model)
    plan = DesiredShadow(model=entry, share=share, cpu_budget=1.0, window_s=window_s)
    updater.submit(DesiredState(agent_id=rollout.agent_id, issued_at=utcnow(), shadows=[plan]))
    wait_until(lambda: state(updater) in ("running", "refused"), "the shadow to start")
    return pipeline, updater


def report(updater: Updater) -> ShadowReport:
    found = updater.shadow(PIPELINE)
    assert found is not None
    return found


def state(updater: Updater) -> str | None:
    found = updater.shadow(PIPELINE)
    return found.state if found is not None else None


def drained(updater: Updater, fed: int) -> bool:
    r = report(updater)
    handled = r.inputs_shadowed + r.skipped_share + r.skipped_budget + r.dropped_full + r.errors
    return r.inputs_seen == fed and handled == fed


def test_the_figures_count_the_inputs_the_pipeline_scored(rollout: Rollout, tmp_path: Path) -> None:
    pipeline, updater = shadowed(
        rollout, "1.1.0", write_same_model(tmp_path / "same.onnx", "1.1.0"), share=0.5
    )
    assert state(updater) == "running", report(updater).reason
    before = pipeline.counters.samples_in
    pipeline.process_windows(windows(pipeline, 200))
    fed = pipeline.counters.samples_in - before
    assert fed == 200
    wait_until(lambda: drained(updater, fed), "the shadow to take every input")
    r = report(updater)
    assert r.deployment_id == 110
    assert (r.model.name, r.model.version) == (MODEL_NAME, "1.1.0")
    # share 0.5 takes exactly every other input; the queue (256) never filled.
    assert (r.inputs_shadowed, r.skipped_share, r.dropped_full) == (100, 100, 0)
    # The same weights: the same call on every input, the same scores, the same alarms.
    assert r.label_matches == r.inputs_shadowed
    assert r.candidate_alarm_windows == r.serving_alarm_windows
    assert r.candidate_alarms == r.serving_alarms
    assert r.score_correlation is not None
    assert r.score_correlation > 0.999
    assert r.candidate_p50_s is not None
    assert r.candidate_p50_s > 0
    assert r.serving_p50_s is not None
    assert pipeline.slot.current().ref.version == "1.0.0"  # it only watched


def test_a_candidate_that_alarms_on_everything_shows_it_and_completes(
    rollout: Rollout, tmp_path: Path
) -> None:
    noisy = write_nan_model(tmp_path / "noisy.onnx", "1.2.0", value=0.0)
    pipeline, updater = shadowed(rollout, "1.2.0", noisy, window_s=3.0)
    assert state(updater) == "running", report(updater).reason
    pipeline.process_windows(windows(pipeline, 50))
    wait_until(lambda: state(updater) == "complete", "the window to end")
    r = report(updater)
    assert r.inputs_shadowed + r.dropped_full + r.skipped_budget == r.inputs_seen
    assert r.inputs_shadowed > 0
    assert r.candidate_alarm_windows == r.inputs_shadowed
    assert r.serving_alarm_windows < r.candidate_alarm_windows
    # It calls a fault on every input: it agrees at most where the serving model alarmed.
    assert r.label_matches <= r.serving_alarm_windows
    # The window is over: later inputs are not counted.
    seen = r.inputs_seen
    pipeline.process_windows(windows(pipeline, 10))
    assert report(updater).inputs_seen == seen


def write_short_window_model(path: Path) -> Path:
    """A model with the vibration labels that takes windows of 1024 values, not 2048."""
    x = helper.make_tensor_value_info("window", TensorProto.FLOAT, ["batch", 1024])
    y = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 6])
    weights = helper.make_tensor("w", TensorProto.FLOAT, [1024, 6], [0.0] * 6144)
    bias = helper.make_tensor("b", TensorProto.FLOAT, [6], [1.0, 0, 0, 0, 0, 0])
    nodes = [
        helper.make_node("MatMul", ["window", "w"], ["h"]),
        helper.make_node("Add", ["h", "b"], ["probabilities"]),
    ]
    graph = helper.make_graph(nodes, "short", [x], [y], [weights, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_a_candidate_whose_input_does_not_fit_is_refused_with_its_reason(
    rollout: Rollout, tmp_path: Path
) -> None:
    path = write_short_window_model(tmp_path / "short.onnx")
    config = rollout.config()
    pipeline = rollout.pipeline(config)
    updater = rollout.updater(config, pipeline)
    entry = rollout.publish("2.0.0", path, sign_manifest(path, MODEL_NAME, "2.0.0", rollout.key,
                                                         golden=[0.0] * 6))  # fmt: skip
    plan = DesiredShadow(model=entry, window_s=60.0)
    updater.submit(DesiredState(agent_id=rollout.agent_id, issued_at=utcnow(), shadows=[plan]))
    wait_until(lambda: state(updater) == "refused", "the refusal")
    reason = report(updater).reason
    assert "input window 1024" in reason, reason
    assert "feeds 2048" in reason, reason
    assert pipeline.shadow is None
    # Inputs go on to the serving model only.
    pipeline.process_windows(windows(pipeline, 5))
    assert report(updater).inputs_seen == 0


def test_a_shadow_makes_no_event_and_ends_when_the_desired_state_drops_it(
    rollout: Rollout, tmp_path: Path
) -> None:
    noisy = write_nan_model(tmp_path / "noisy.onnx", "1.2.0", value=0.0)
    config = rollout.config(speed=20.0)
    pipeline = rollout.pipeline(config)
    outbox = Outbox(tmp_path / "events.db", max_bytes=10**9, max_age_s=1e9)
    stop, thread = running_pipeline(pipeline, outbox)
    try:
        updater = rollout.updater(config, pipeline)
        plan = DesiredShadow(model=rollout.publish("1.2.0", noisy), window_s=600.0)
        updater.submit(DesiredState(agent_id=rollout.agent_id, issued_at=utcnow(), shadows=[plan]))
        wait_until(lambda: state(updater) == "running", "the shadow to start")
        wait_until(lambda: report(updater).candidate_alarm_windows >= 20, "the candidate to alarm")
        updater.submit(DesiredState(agent_id=rollout.agent_id, issued_at=utcnow()))
        wait_until(lambda: updater.shadow(PIPELINE) is None, "the shadow to end")
        assert pipeline.shadow is None
    finally:
        stop.set()
        thread.join()
    events = stored_events(outbox)
    # One event per window (EVERY_WINDOW filters), every one from the serving model.
    assert len(events) == pipeline.counters.samples_in
    assert {(e.model.name, e.model.version) for e in events} == {(MODEL_NAME, "1.0.0")}


def test_agreement_correlation_is_pearsons() -> None:
    a = Agreement()
    serving = [0.1, 0.2, 0.9, 0.4]
    candidate = [0.2, 0.1, 0.8, 0.5]
    for s, c in zip(serving, candidate, strict=True):
        a.add((s, "x", False), (c, "x", False))
    r = a.correlation()
    assert r is not None
    assert abs(r - float(np.corrcoef(serving, candidate)[0, 1])) < 1e-9
    constant = Agreement()
    for s in serving:
        constant.add((s, "x", False), (0.5, "y", False))
    assert constant.correlation() is None
    assert constant.label_matches == 0


def test_a_camera_shadow_compares_the_best_detection_of_each_frame() -> None:
    config = gate_config()
    pipeline = VisionPipeline(config, load_slot(config.model, config.runtime))
    candidate = load_slot(config.model, config.runtime).current()
    ref = candidate.ref
    manifest = ModelManifest(name=ref.name, version="1.1.0", sha256=ref.sha256, size=1,
                             inputs=[], outputs=[])  # fmt: skip
    entry = DesiredModel(
        pipeline=config.name, deployment_id=9,
        manifest=SignedManifest(manifest=manifest, signature="", key_id=""), artifact_path="/a",
    )  # fmt: skip
    shadow = Shadow(pipeline, candidate, DesiredShadow(model=entry, cpu_budget=1.0, window_s=600),
                    vision=config.vision)  # fmt: skip
    shadow.start()
    pipeline.shadow = shadow.offer
    try:
        for sample in itertools.islice(pipeline.source.samples(threading.Event()), 20):
            pipeline.process_sample(sample)
        inferred = pipeline.counters.inferences
        wait_until(
            lambda: (r := shadow.report()).inputs_shadowed + r.dropped_full == inferred,
            "the shadow to take every frame",
        )
    finally:
        pipeline.shadow = None
        shadow.stop()
    r = shadow.report()
    assert r.inputs_seen == inferred == 20
    assert r.inputs_shadowed > 0
    # The same detector with the same thresholds: the same best object on every frame.
    assert r.label_matches == r.inputs_shadowed
    assert r.candidate_alarm_windows == r.serving_alarm_windows > 0
    assert r.candidate_alarms == r.serving_alarms >= 1


def test_a_sensor_model_cannot_shadow_a_camera() -> None:
    config = gate_config()
    detector = load_slot(config.model, config.runtime).current()
    vibration = load_slot(RolloutModel.model_validate(model_section()), RuntimeConfig()).current()
    assert fit_problem(detector, vibration) == (
        "vibration-anomaly 1.0.0 (anomaly) cannot shadow the pipeline's detection model"
    )
    assert fit_problem(detector, detector) is None
