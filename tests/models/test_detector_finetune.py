"""The detector's fine-tune: the serving network re-created from its ONNX file, a short
fine-tune exported in the base's layout, and the figures the training gate compares."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from edge_agent.inference.runtime import Runtime

pytest.importorskip("torch", reason="the train extra (make test installs it)")

from models import detector, detector_cloud, detector_finetune, detector_net
from models.scenes import LabelledFrame, labelled_frames
from shared.errors import ModelError

MODELS = Path(detector.__file__).resolve().parent
EDGE = (MODELS / detector.FILE).read_bytes()
CLOUD = (MODELS / detector_cloud.FILE).read_bytes()


def test_the_serving_edge_detector_is_re_created_from_its_onnx_file() -> None:
    net, spec = detector_finetune.load_net(EDGE)  # checked against ONNX Runtime inside
    assert (spec.widths, spec.extra, spec.dynamic_batch) == (detector_net.WIDTHS, 0, False)
    frames = list(labelled_frames(detector.HELD_OUT_SEED, 2, 2))
    assert detector_net.check_export(net, EDGE, frames) < detector_net.MAX_EXPORT_ERROR


def test_the_cloud_detectors_layout_is_read_from_its_file() -> None:
    spec = detector_finetune.spec_of(CLOUD)
    assert spec.widths == detector_cloud.WIDTHS
    assert spec.extra == detector_cloud.EXTRA
    assert spec.dynamic_batch


def test_a_model_that_is_not_the_detector_network_is_refused() -> None:
    vibration = (MODELS / "vibration-anomaly-1.0.0.onnx").read_bytes()
    with pytest.raises(ModelError, match="not a scene-detector network"):
        detector_finetune.load_net(vibration)


def test_frames_without_an_object_to_learn_are_refused() -> None:
    frame = next(labelled_frames(detector.HELD_OUT_SEED, 1, 1))
    unsure = LabelledFrame(frame.image, frame.boxes, np.full_like(frame.labels, -1), frame.visible)
    with pytest.raises(ModelError, match="no object to learn"):
        detector_finetune.fine_tune(EDGE, [unsure], name="scene-detector", version="x")


def test_a_short_fine_tune_exports_the_bases_layout_under_its_new_version() -> None:
    frames = [f for f in labelled_frames(44, 6, 1) if len(f.labels)]
    settings = detector_finetune.Settings(steps=2, replay_scenes=1, batch=4)
    tuned = detector_finetune.fine_tune(
        EDGE, frames, name="scene-detector", version="1.0.0-job7", settings=settings
    )
    assert (tuned.device, tuned.steps, tuned.frames) == ("cpu", 2, len(frames))
    assert tuned.replay_frames == detector_finetune.REPLAY_FRAMES_PER_SCENE
    assert tuned.export_error < detector_net.MAX_EXPORT_ERROR
    proto = onnx.load_from_string(tuned.model)
    metadata = {prop.key: prop.value for prop in proto.metadata_props}
    assert metadata["version"] == "1.0.0-job7"
    assert proto.doc_string.startswith("scene-detector 1.0.0-job7")
    base, candidate = Runtime(EDGE), Runtime(tuned.model)
    assert (candidate.input_name, candidate.input_shape) == (base.input_name, base.input_shape)
    assert candidate.output_shapes == base.output_shapes
    tensor = np.zeros((1, 3, detector.INPUT_SIZE, detector.INPUT_SIZE), np.float32)
    assert candidate.run(tensor).shape == base.run(tensor).shape


def test_the_gates_figures_are_the_model_cards_counts() -> None:
    frames = list(labelled_frames(detector.HELD_OUT_SEED, 10, 2))
    quality = detector.quality(EDGE, frames)
    card = detector.evaluate(Runtime(EDGE).run, frames)
    assert quality.windows == len(frames)
    assert quality.recall == card.recall
    assert quality.false_alarm_rate is not None
    assert quality.false_alarm_rate == pytest.approx(1 - card.precision, abs=1e-4)
    assert quality.faults == sum(label.support for label in card.per_label.values())
    nothing = detector.quality(EDGE, [])
    assert (nothing.false_alarm_rate, nothing.recall) == (None, None)
