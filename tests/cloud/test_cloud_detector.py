"""The cloud detector on its own (no broker, no database): what it takes, how it refuses,
and one session run for a batch of images against runs of one."""

from __future__ import annotations

import numpy as np
import pytest

from cloud_api.escalation.detector import CloudDetector, decode_jpeg, detector_output
from edge_agent.sources.synthetic_scene import CLASSES
from shared.errors import ContractError
from tests.cloud.escalation_helpers import MODELS, escalation, windows
from tests.cloud.helpers import unique_agent_id
from tests.cloud.image_escalation_helpers import (
    DETECTOR,
    DETECTOR_VERSION,
    crops,
    frames,
    image_escalation,
)


@pytest.fixture(scope="module")
def detector() -> CloudDetector:
    onnx = (MODELS / f"{DETECTOR}-{DETECTOR_VERSION}.onnx").read_bytes()
    return CloudDetector(
        onnx, name=DETECTOR, version=DETECTOR_VERSION, sha256="0" * 64, labels=list(CLASSES)
    )


def test_the_shipped_cloud_detector_takes_batches(detector: CloudDetector) -> None:
    assert not detector.batch_fixed
    assert detector.size == (320, 320)


def test_a_detection_head_is_told_from_a_classifier() -> None:
    assert detector_output(["car", "person"], ["batch", 6, 1600])
    assert not detector_output(["car", "person"], ["batch", 2])
    assert not detector_output(["car", "person"], [1, 5, 1600])


def test_one_run_for_a_batch_answers_as_runs_of_one(detector: CloudDetector) -> None:
    agent = unique_agent_id("cam")
    inputs = [detector.prepare(image_escalation(agent, s)) for s in crops(6) + frames(3)]
    batched = detector.run(inputs)
    alone = [answer for item in inputs for answer in detector.run([item])]
    assert [a.label for a in batched] == [a.label for a in alone]
    assert np.allclose([a.score for a in batched], [a.score for a in alone], atol=1e-4)
    for a, b in zip(batched, alone, strict=True):
        assert [d.label for d in a.detections] == [d.label for d in b.detections]


def test_a_window_is_refused_by_a_detector(detector: CloudDetector) -> None:
    window = escalation(unique_agent_id("cam"), windows(1)[0])
    with pytest.raises(ContractError, match="it takes images, not windows"):
        detector.prepare(window)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "no JPEG start marker"),
        (b"GIF89a", "no JPEG start marker"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 64, "not a JPEG that decodes"),
    ],
)
def test_bytes_that_are_not_a_jpeg_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(ContractError, match=reason):
        decode_jpeg(data)
