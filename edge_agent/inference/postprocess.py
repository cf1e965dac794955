"""Vision pre- and postprocessing around a detector session.

The model-format parts (letterbox, YOLO decode, NMS, ``Detection``) live in
:mod:`shared.yolo`, which the cloud's escalation runner uses too; they are re-exported here
for the edge. What is the edge's own: reading a labels file.
"""

from __future__ import annotations

from pathlib import Path

from shared.errors import ConfigError
from shared.yolo import (
    PAD_VALUE,
    BoxXYXY,
    Detection,
    Frame,
    Letterbox,
    Letterboxer,
    Tensor,
    box_iou,
    decode_yolo,
    letterbox,
    letterbox_geometry,
    nms,
    pairwise_iou,
)

__all__ = [
    "PAD_VALUE",
    "BoxXYXY",
    "Detection",
    "Frame",
    "Letterbox",
    "Letterboxer",
    "Tensor",
    "box_iou",
    "decode_yolo",
    "letterbox",
    "letterbox_geometry",
    "nms",
    "pairwise_iou",
    "read_labels",
]


def read_labels(path: Path) -> list[str]:
    """Labels from a text file, one per line in class order; blank lines are ignored."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read labels: {exc.strerror}") from None
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not labels:
        raise ConfigError(f"{path}: the labels file has no labels")
    return labels
