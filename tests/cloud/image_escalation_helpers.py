"""Image escalations built as a camera agent builds them: synthetic street frames, the edge's
privacy encoder cutting a JPEG crop per object, and the shipped cloud detector registered as
a pipeline's cloud model."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
from fastapi.testclient import TestClient

from edge_agent.inference.postprocess import Detection
from edge_agent.pipelines.privacy import PrivacyConfig, images_that_leave
from edge_agent.sources.synthetic_scene import CLASSES
from models.scenes import LabelledFrame, labelled_frames
from shared.escalations import Escalation
from shared.messages import ModelRef, new_event_id, utcnow
from shared.samples import ImageInfo
from tests.cloud.escalation_helpers import MODELS

DETECTOR = "scene-detector-cloud"
DETECTOR_VERSION = "1.0.0"
CAMERA = "street-camera"
EDGE_DETECTOR = ModelRef(name="scene-detector", version="1.0.0", sha256="5ce7" + "0" * 60)
SEED = 33  # streets neither detector was trained or measured on


def register_detector(client: TestClient | httpx.Client, pipeline: str = CAMERA) -> None:
    """Upload the shipped cloud detector (once per database) and make it ``pipeline``'s."""
    exists = client.get(f"/api/v1/models/{DETECTOR}/versions/{DETECTOR_VERSION}")
    if exists.status_code == 404:
        onnx = (MODELS / f"{DETECTOR}-{DETECTOR_VERSION}.onnx").read_bytes()
        uploaded = client.post(
            f"/api/v1/models/{DETECTOR}/versions",
            data={"version": DETECTOR_VERSION, "task": "detection", "labels": ",".join(CLASSES)},
            files={"file": ("model.onnx", onnx, "application/octet-stream")},
        )
        assert uploaded.status_code == 201, uploaded.text
    put = client.put(
        f"/api/v1/cloud-models/{pipeline}",
        json={"model": DETECTOR, "version": DETECTOR_VERSION},
    )
    assert put.status_code == 200, put.text


@dataclass(frozen=True, slots=True)
class Shot:
    """One JPEG an agent would escalate, what it shows, and the object's true label."""

    jpeg: bytes
    info: ImageInfo
    truth: str


def crops(count: int, *, min_height: float = 30.0, min_visible: float = 0.8) -> list[Shot]:
    """Crops of clearly visible objects of synthetic streets, cut by the edge's own privacy
    encoder (``images: crops``) around each object as the edge detector would box it."""
    shots: list[Shot] = []
    for frame in labelled_frames(SEED, 40, 1):
        detections = _edge_detections(frame)
        clear = {
            d.box
            for d, box, seen in zip(detections, frame.boxes, frame.visible, strict=True)
            if box[3] - box[1] >= min_height and seen >= min_visible
        }
        for jpeg, info in images_that_leave(PrivacyConfig(images="crops"), frame.image, detections):
            shown = info.detections[0]
            if tuple(shown.box) in clear:
                shots.append(Shot(jpeg, info, shown.label))
            if len(shots) == count:
                return shots
    raise AssertionError(f"the streets hold fewer than {count} clear objects")


def frames(count: int) -> list[Shot]:
    """Whole frames (``images: frames``) with at least one object; truth: the first's label."""
    shots: list[Shot] = []
    for frame in labelled_frames(SEED, 40, 1):
        detections = _edge_detections(frame)
        policy = PrivacyConfig(images="frames")
        for jpeg, info in images_that_leave(policy, frame.image, detections):
            if info.detections:
                shots.append(Shot(jpeg, info, info.detections[0].label))
        if len(shots) == count:
            return shots
    raise AssertionError(f"the streets hold fewer than {count} frames with objects")


def _edge_detections(frame: LabelledFrame) -> list[Detection]:
    """The frame's objects as an unsure edge detector reports them (score 0.5)."""
    return [
        Detection(CLASSES[int(label)], 0.5, (float(b[0]), float(b[1]), float(b[2]), float(b[3])))
        for b, label in zip(frame.boxes, frame.labels, strict=True)
    ]


def image_escalation(
    agent_id: str,
    shot: Shot,
    *,
    pipeline: str = CAMERA,
    data: bytes | None = None,
    **changes: Any,
) -> Escalation:
    """The escalation of ``shot``'s first detection (or of raw ``data`` in its place)."""
    unsure = shot.info.detections[0]
    blob = shot.jpeg if data is None else data
    region = "crops" if shot.info.region == "crop" else "frames"
    values: dict[str, Any] = {
        "id": new_event_id(),
        "agent_id": agent_id,
        "pipeline": pipeline,
        "ts": utcnow(),
        "model": EDGE_DETECTOR,
        "label": unsure.label,
        "score": unsure.score,
        "kind": "image",
        "image": shot.info,
        "privacy": {"images": region},
        "data": base64.b64encode(blob).decode(),
    }
    values.update(changes)
    return Escalation.model_validate(values)


def in_image(box: tuple[float, float, float, float], info: ImageInfo) -> bool:
    """True when ``box`` lies within the escalated image's pixels."""
    x1, y1, x2, y2 = box
    return 0.0 <= x1 < x2 <= info.width and 0.0 <= y1 < y2 <= info.height


def boxes(result: Any) -> np.ndarray[Any, Any]:
    """A result's detection boxes as a (K, 4) array."""
    return np.array([d.box for d in result.detections], np.float64).reshape(-1, 4)
