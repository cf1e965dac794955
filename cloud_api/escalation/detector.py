"""A cloud detector: image escalations (a JPEG crop or frame) read by a YOLOv8-layout model.

The image's size is read from its JPEG header first, and one that is not the size the
escalation declares, or is over the contract's pixel bound, is refused before anything is
decoded (a few hundred crafted bytes can claim gigapixels). Then the image is decoded (a
JPEG that does not decode is refused with its reason), letterboxed as the edge does
(:mod:`shared.yolo`), and a batch of images runs in one session call (one call per image
when the model's batch axis is fixed). Each output is decoded with the edge's own decode and
NMS, and the boxes are mapped back to the escalated image's pixels.

A crop is small: letterboxed alone, its object would fill the model's input at a scale the
detector never learnt. It is kept unscaled at the centre of a square of ``CROP_CANVAS``
pixels (the width of the frames the detectors are trained on), so its objects reach the
model at the scale they have in a whole frame. The square is filled by repeating the crop's
edge pixels outwards, not with grey: against a flat grey surround, the edges of an empty
crop look like an object's outline (the shipped edge detector saw a car or a person in 14 of
20 crops of empty streets that way, none with the edges repeated; 69 of 71 crops of clear
objects were answered right, 71 with grey).

The answer is the best detection of the object the edge asked about: the highest-scoring
detection that overlaps the edge's unsure box (IoU >= ``MATCH_IOU``) when the escalation
carries that box, else the highest-scoring detection of the image. When none passes the
score threshold the answer is :data:`NOTHING` with score 0 ("the cloud sees no object").
Every detection comes with the answer, in the escalated image's pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from cloud_api.escalation.model import Answer, open_session
from cloud_api.jpeg import decode_jpeg, jpeg_size
from shared.errors import ContractError, ModelError
from shared.escalations import Escalation
from shared.samples import MAX_DETECTIONS, SampleDetection
from shared.yolo import BoxXYXY, Detection, Letterbox, box_iou, decode_yolo, letterbox

NOTHING = "background"
"""A detector's answer when it finds no object (score 0)."""
SCORE_THRESHOLD = 0.35  # the shipped detectors' operating point (their model cards)
IOU_THRESHOLD = 0.45  # NMS, as the edge
MATCH_IOU = 0.3  # a cloud detection is the edge's object when it overlaps it this much
CROP_CANVAS = 640


def detector_output(labels: Sequence[str], shape: Sequence[object]) -> bool:
    """True when an output of ``shape`` is a YOLOv8 head for ``labels``: [B, 4 + C, N]."""
    return len(shape) == 3 and shape[1] == 4 + len(labels)


@dataclass(frozen=True, slots=True)
class ImageInput:
    """One escalated image as the detector takes it, and how to map boxes back."""

    tensor: npt.NDArray[np.float32]
    """``[1, 3, H, W]``: the letterboxed canvas."""
    geometry: Letterbox
    """Canvas pixels <-> model pixels."""
    offset: tuple[int, int]
    """Where the image's top-left corner lies in the canvas (x, y)."""
    width: int
    height: int
    edge_box: BoxXYXY | None
    """The edge's unsure detection in the image's pixels, when the escalation carries it."""


class CloudDetector:
    """A registry version of a YOLOv8-layout detector loaded for the runner."""

    def __init__(
        self,
        model: bytes,
        *,
        name: str,
        version: str,
        sha256: str,
        labels: list[str],
        threads: int = 0,
    ) -> None:
        self.name, self.version, self.sha256 = name, version, sha256
        where = f"{name} {version}"
        self._session, self.provider = open_session(model, where=where, threads=threads)
        inputs = self._session.get_inputs()
        shape = list(inputs[0].shape) if len(inputs) == 1 else []
        if len(shape) != 4 or not all(isinstance(d, int) for d in shape[2:]) or shape[1] != 3:
            raise ModelError(f"cloud detector {where} must take one [batch, 3, H, W] input")
        self._input = inputs[0].name
        self.size: tuple[int, int] = (int(shape[2]), int(shape[3]))
        self.batch_fixed = isinstance(shape[0], int)
        if not labels:
            raise ModelError(f"cloud detector {where} has no labels in the registry")
        self.labels = labels

    def prepare(self, escalation: Escalation) -> ImageInput:
        """The escalation's image ready to run; ContractError when it is not a usable image."""
        if escalation.kind != "image" or escalation.image is None:
            raise ContractError(
                f"cloud model {self.name} is a detector: it takes images, not {escalation.kind}s"
            )
        info = escalation.image
        data = escalation.input_bytes()
        width, height = jpeg_size(data)
        if (width, height) != (info.width, info.height):
            raise ContractError(
                f"the image is {width}x{height}; the escalation declares {info.width}x{info.height}"
            )
        image = decode_jpeg(data)
        canvas, offset = image, (0, 0)
        if info.region == "crop" and max(width, height) <= CROP_CANVAS:
            left, top = (CROP_CANVAS - width) // 2, (CROP_CANVAS - height) // 2
            right, bottom = CROP_CANVAS - width - left, CROP_CANVAS - height - top
            padded = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_REPLICATE)
            canvas = np.asarray(padded, dtype=np.uint8)
            offset = (left, top)
        tensor, geometry = letterbox(canvas, self.size)
        return ImageInput(tensor, geometry, offset, width, height, _edge_box(escalation))

    def run(self, inputs: list[ImageInput]) -> list[Answer]:
        """One session call for the whole batch (one per image when the batch is fixed)."""
        if self.batch_fixed:
            outputs = [self._call(item.tensor) for item in inputs]
        else:
            batch = self._call(np.concatenate([item.tensor for item in inputs]))
            outputs = [batch[i : i + 1] for i in range(len(inputs))]
        return [self._answer(item, out) for item, out in zip(inputs, outputs, strict=True)]

    def _call(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        try:
            output = np.asarray(self._session.run(None, {self._input: batch})[0], np.float32)
        except Exception as exc:  # ORT's exceptions share no base but Exception
            raise ModelError(f"cloud model {self.name} {self.version} failed: {exc}") from exc
        if output.ndim != 3 or output.shape[0] != batch.shape[0] or not np.isfinite(output).all():
            raise ModelError(
                f"cloud detector {self.name} {self.version}: output {list(output.shape)} is not "
                f"one finite detection head per image"
            )
        return output

    def _answer(self, item: ImageInput, output: npt.NDArray[np.float32]) -> Answer:
        found = decode_yolo(
            output, self.labels, item.geometry,
            score_threshold=SCORE_THRESHOLD, iou_threshold=IOU_THRESHOLD,
        )  # fmt: skip
        detections = _in_image(found, item)[:MAX_DETECTIONS]
        candidates = detections
        if item.edge_box is not None:
            edge = item.edge_box
            candidates = [d for d in detections if box_iou(_box(d), edge) >= MATCH_IOU]
        described = tuple(
            SampleDetection(label=d.label, score=d.score, box=d.box) for d in detections
        )
        if not candidates:
            return Answer(NOTHING, 0.0, described)
        best = max(candidates, key=lambda d: d.score)
        return Answer(best.label, float(np.clip(best.score, 0.0, 1.0)), described)


def _edge_box(escalation: Escalation) -> BoxXYXY | None:
    """The edge's unsure detection in the image's pixels (a crop's boxes shifted by its
    place in the frame), or None when the image does not carry it."""
    info = escalation.image
    if info is None:
        return None
    for seen in info.detections:
        if seen.label == escalation.label and abs(seen.score - escalation.score) < 1e-6:
            dx, dy = (info.box[0], info.box[1]) if info.box is not None else (0.0, 0.0)
            x1, y1, x2, y2 = seen.box
            return (x1 - dx, y1 - dy, x2 - dx, y2 - dy)
    return None


def _in_image(found: list[Detection], item: ImageInput) -> list[Detection]:
    """Detections moved from canvas pixels to the image's, clipped to it; empty boxes dropped."""
    out = []
    dx, dy = item.offset
    for d in found:
        x1, x2 = np.clip([d.box[0] - dx, d.box[2] - dx], 0.0, item.width).tolist()
        y1, y2 = np.clip([d.box[1] - dy, d.box[3] - dy], 0.0, item.height).tolist()
        if x2 > x1 and y2 > y1:
            out.append(Detection(d.label, d.score, (x1, y1, x2, y2)))
    return out


def _box(detection: SampleDetection | Detection) -> BoxXYXY:
    x1, y1, x2, y2 = detection.box
    return (x1, y1, x2, y2)
