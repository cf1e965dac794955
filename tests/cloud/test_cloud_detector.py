"""The cloud detector on its own (no broker, no database): what it takes, how it refuses,
and one session run for a batch of images against runs of one."""

from __future__ import annotations

import struct
from typing import Any

import cv2
import numpy as np
import pytest

from cloud_api.escalation.detector import CloudDetector, detector_output
from cloud_api.jpeg import decode_jpeg, jpeg_size
from edge_agent.sources.synthetic_scene import CLASSES
from shared.errors import ContractError
from tests.cloud.escalation_helpers import MODELS, escalation, windows
from tests.cloud.helpers import unique_agent_id
from tests.cloud.image_escalation_helpers import (
    DETECTOR,
    DETECTOR_VERSION,
    Shot,
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


def claiming(width: int, height: int) -> bytes:
    """A real 16x16 JPEG whose frame header (SOF0) claims ``width`` x ``height``."""
    ok, encoded = cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))
    assert ok
    data = bytearray(encoded.tobytes())
    sof = data.index(b"\xff\xc0")
    # marker, length (2), precision (1), then height and width (2 each, big-endian)
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoding a crafted header would allocate what it claims: the test fails instead."""

    def refuse(*_: Any) -> Any:
        raise AssertionError("the JPEG was decoded")

    monkeypatch.setattr(cv2, "imdecode", refuse)


def test_the_size_is_read_from_the_header_without_decoding(no_decoding: None) -> None:
    assert jpeg_size(claiming(640, 480)) == (640, 480)


@pytest.mark.usefixtures("no_decoding")
@pytest.mark.parametrize(("width", "height"), [(60000, 60000), (8000, 6000), (65535, 700)])
def test_a_header_claiming_too_many_pixels_is_refused_undecoded(width: int, height: int) -> None:
    with pytest.raises(ContractError, match="refused undecoded"):
        decode_jpeg(claiming(width, height))


def test_a_header_unlike_the_declared_size_is_refused_undecoded(
    detector: CloudDetector, no_decoding: None
) -> None:
    shot = crops(1)[0]
    bomb = claiming(6000, 6000)  # within the contract's bound, but not what is declared
    one = image_escalation(unique_agent_id("cam"), Shot(bomb, shot.info, shot.truth))
    declared = f"{shot.info.width}x{shot.info.height}"
    with pytest.raises(
        ContractError, match=f"the image is 6000x6000; the escalation declares {declared}"
    ):
        detector.prepare(one)
