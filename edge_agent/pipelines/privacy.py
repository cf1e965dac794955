"""The privacy policy of a pipeline, enforced on the device before anything is written.

``images`` says what pixels may leave a camera: ``never`` (the default: no pixels at all,
so a camera keeps no samples), ``crops`` (a crop around each detected object whose label
may leave) or ``frames`` (the whole frame). Boxes of the ``blur`` labels are blurred in the
pixels that leave (a strong Gaussian blur of the box), whatever the crop or frame shows;
``keep_labels`` names the labels whose detections may leave (empty: every label). The
policy goes with each sample, so a reviewer knows what the device was allowed to send.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import Field

from edge_agent.config_types import StrictConfig
from edge_agent.inference.postprocess import Detection
from edge_agent.pipelines.thumbnails import crop_region
from shared.samples import (
    MAX_POLICY_LABELS,
    ImageInfo,
    ImagePolicy,
    PrivacyPolicy,
    SampleDetection,
)

Frame = npt.NDArray[np.uint8]
JPEG_QUALITY = 85
BLUR_FRACTION = 0.5
"""The blur kernel's side as a share of the box's shorter side: a face becomes a smear."""


class PrivacyConfig(StrictConfig):
    """``privacy:`` of a pipeline: what pixels may leave, what is blurred, which labels."""

    images: ImagePolicy = "never"
    blur: list[str] = Field(default_factory=list, max_length=MAX_POLICY_LABELS)
    keep_labels: list[str] = Field(default_factory=list, max_length=MAX_POLICY_LABELS)

    def policy(self) -> PrivacyPolicy:
        """The policy as it is recorded with each sample."""
        return PrivacyPolicy(images=self.images, blur=self.blur, keep_labels=self.keep_labels)


def blur_boxes(frame: Frame, boxes: Sequence[tuple[float, float, float, float]]) -> Frame:
    """A copy of ``frame`` with each box (frame pixels) Gaussian-blurred."""
    out = frame.copy()
    height, width = frame.shape[:2]
    for x1, y1, x2, y2 in boxes:
        left, top = max(0, int(x1)), max(0, int(y1))
        right, bottom = min(width, int(np.ceil(x2))), min(height, int(np.ceil(y2)))
        if right - left < 2 or bottom - top < 2:
            continue
        side = int(min(right - left, bottom - top) * BLUR_FRACTION) | 1
        region = out[top:bottom, left:right]
        out[top:bottom, left:right] = cv2.GaussianBlur(region, (side, side), 0)
    return out


def leaving(config: PrivacyConfig, detections: Sequence[Detection]) -> list[Detection]:
    """The detections whose label may leave the device."""
    keep = config.keep_labels
    return [d for d in detections if not keep or d.label in keep]


def images_that_leave(
    config: PrivacyConfig, frame: Frame, detections: Sequence[Detection]
) -> list[tuple[bytes, ImageInfo]]:
    """The JPEGs the policy lets leave for one frame, each with what it shows; none under
    ``never``, nor when no detection of a kept label is in the frame and labels are named."""
    if config.images == "never":
        return []
    allowed = leaving(config, detections)
    if config.keep_labels and not allowed:
        return []
    blurred_boxes = [d.box for d in detections if d.label in config.blur]
    clean = blur_boxes(frame, blurred_boxes) if blurred_boxes else frame
    described = [SampleDetection(label=d.label, score=d.score, box=d.box) for d in allowed]
    if config.images == "frames":
        height, width = frame.shape[:2]
        info = ImageInfo(
            width=width,
            height=height,
            region="frame",
            detections=described,
            blurred=len(blurred_boxes),
        )
        return [(_jpeg(clean), info)]
    out: list[tuple[bytes, ImageInfo]] = []
    for detection, description in zip(allowed, described, strict=True):
        left, top, right, bottom = crop_region(frame.shape, detection.box)
        image = clean[top:bottom, left:right]
        blurred = sum(1 for box in blurred_boxes if _overlaps(box, (left, top, right, bottom)))
        info = ImageInfo(
            width=right - left,
            height=bottom - top,
            region="crop",
            box=(float(left), float(top), float(right), float(bottom)),
            detections=[description],
            blurred=blurred,
        )
        out.append((_jpeg(np.ascontiguousarray(image)), info))
    return out


def _overlaps(box: tuple[float, float, float, float], region: tuple[int, int, int, int]) -> bool:
    return box[0] < region[2] and region[0] < box[2] and box[1] < region[3] and region[1] < box[3]


def _jpeg(image: Frame) -> bytes:
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError(f"cannot encode a {image.shape} image as JPEG")
    return bytes(encoded.tobytes())
