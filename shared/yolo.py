"""Vision pre- and postprocessing of a YOLOv8-layout detector, shared by edge and cloud. No I/O.

``Letterboxer`` fits a BGR frame into the model's square input the way Ultralytics
trains YOLO (keep the aspect ratio, pad with grey 114, centre) and writes the RGB/255
tensor into a buffer it reuses, so a camera pipeline allocates nothing per frame.
``decode_yolo`` reads a YOLOv8/v11 detection head (``[1, 4 + C, N]``: centre, size and one
sigmoid score per class, no objectness), keeps the best class per anchor, suppresses
overlaps per class and maps the boxes back to frame pixels. Every step works on whole
arrays (NMS is OpenCV's C++ greedy pass): there is no Python loop over the N anchors.

The edge (``edge_agent.inference.postprocess``) and the cloud's escalation runner both decode
with this module, so an escalated image is read the same way on both sides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

from shared.errors import ModelError

Frame = npt.NDArray[np.uint8]
"""A BGR image, ``(height, width, 3)`` uint8, as OpenCV reads it."""

Tensor = npt.NDArray[np.float32]
BoxXYXY = tuple[float, float, float, float]

PAD_VALUE = 114
"""Ultralytics pads with this grey; a model trained on it sees the same borders here."""

_CANDIDATES_MAX = 30000  # anchors kept for NMS at most (Ultralytics' max_nms)
_UNIT_SCALE = (np.arange(256, dtype=np.float32) * np.float32(1.0 / 255.0)).reshape(1, 256)
"""Byte value -> its model input (RGB/255), as a lookup table for ``cv2.LUT``."""


@dataclass(frozen=True, slots=True)
class Letterbox:
    """Where a frame landed in the model's input: maps model boxes back to frame pixels."""

    scale: float
    """Model pixels per frame pixel."""
    pad_x: int
    """Columns of padding left of the image."""
    pad_y: int
    """Rows of padding above the image."""
    frame_width: int
    frame_height: int

    def to_frame(self, boxes: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
        """``(K, 4)`` x1, y1, x2, y2 boxes in model pixels -> frame pixels, clipped to it."""
        out = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
        # Whole rows at once, with per-column operands: the same arithmetic per coordinate.
        out -= (self.pad_x, self.pad_y, self.pad_x, self.pad_y)
        out /= self.scale
        np.clip(out, 0.0, (self.frame_width, self.frame_height) * 2, out=out)
        return out


@dataclass(frozen=True, slots=True)
class Detection:
    """One detected object; ``box`` is x1, y1, x2, y2 in the original frame's pixels."""

    label: str
    score: float
    box: BoxXYXY


def letterbox_geometry(frame_hw: tuple[int, int], size: tuple[int, int]) -> Letterbox:
    """The scale and padding that fit a ``frame_hw`` frame into ``size`` (height, width).

    The rounding follows Ultralytics' ``LetterBox`` (``round(d - 0.1)`` for the top/left
    padding), so boxes land on the same pixels as in training.
    """
    h0, w0 = frame_hw
    height, width = size
    scale = min(height / h0, width / w0)
    new_w, new_h = round(w0 * scale), round(h0 * scale)
    pad_x = round((width - new_w) / 2 - 0.1)
    pad_y = round((height - new_h) / 2 - 0.1)
    return Letterbox(scale, pad_x, pad_y, w0, h0)


class Letterboxer:
    """Letterboxes frames into one reused ``[1, 3, H, W]`` float32 RGB/255 tensor.

    The padding is written once per frame size; each call only resizes the frame into a
    small reused buffer and converts that band. The returned tensor is the shared buffer:
    run the model on it before the next call (the pipeline does, one frame at a time).
    """

    __slots__ = ("_geometry", "_planes", "_region", "_resized", "_shape", "_size", "_tensor")

    def __init__(self, size: tuple[int, int] = (320, 320)) -> None:
        self._size = size
        self._tensor: Tensor = np.empty((1, 3, *size), dtype=np.float32)
        self._shape: tuple[int, int] | None = None
        self._geometry = Letterbox(1.0, 0, 0, 0, 0)
        self._resized: Frame = np.empty((0, 0, 3), dtype=np.uint8)
        self._planes: list[npt.NDArray[np.uint8]] = []
        self._region: Tensor = self._tensor[0]

    @property
    def size(self) -> tuple[int, int]:
        """The model input's (height, width)."""
        return self._size

    def __call__(self, frame: Frame) -> tuple[Tensor, Letterbox]:
        """The model input for ``frame`` (BGR uint8) and how to map boxes back."""
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"expected a BGR frame (H, W, 3), got shape {frame.shape}")
        shape = (frame.shape[0], frame.shape[1])
        if shape != self._shape:
            self._prepare(shape)
        cv2.resize(
            frame,
            (self._resized.shape[1], self._resized.shape[0]),
            dst=self._resized,
            interpolation=cv2.INTER_LINEAR,
        )
        # One channel at a time, BGR -> RGB, into reused planes: cheaper than a strided 3-D
        # multiply. The table holds float32(v) * float32(1/255) for every byte v, so the
        # tensor is bit for bit what the multiply gives, at a lookup's cost.
        planes = self._planes
        cv2.split(self._resized, planes)
        region = self._region
        cv2.LUT(planes[2], _UNIT_SCALE, dst=region[0])
        cv2.LUT(planes[1], _UNIT_SCALE, dst=region[1])
        cv2.LUT(planes[0], _UNIT_SCALE, dst=region[2])
        return self._tensor, self._geometry

    def _prepare(self, shape: tuple[int, int]) -> None:
        geometry = letterbox_geometry(shape, self._size)
        new_h = round(shape[0] * geometry.scale)
        new_w = round(shape[1] * geometry.scale)
        self._tensor.fill(PAD_VALUE / 255.0)
        self._resized = np.empty((new_h, new_w, 3), dtype=np.uint8)
        self._planes = [np.empty((new_h, new_w), dtype=np.uint8) for _ in range(3)]
        y, x = geometry.pad_y, geometry.pad_x
        self._region = self._tensor[0, :, y : y + new_h, x : x + new_w]
        self._geometry = geometry
        self._shape = shape


def letterbox(frame_bgr: Frame, size: tuple[int, int] = (320, 320)) -> tuple[Tensor, Letterbox]:
    """A fresh ``[1, 3, H, W]`` float32 RGB/255 tensor for ``frame_bgr`` (size is H, W).

    Allocates per call; a pipeline keeps a ``Letterboxer`` instead.
    """
    tensor, geometry = Letterboxer(size)(frame_bgr)
    return np.ascontiguousarray(tensor), geometry


def nms(
    boxes: npt.NDArray[np.floating], scores: npt.NDArray[np.floating], iou_threshold: float
) -> npt.NDArray[np.intp]:
    """Greedy non-maximum suppression: indices of the kept boxes, best score first.

    A box is dropped when its IoU with a kept, higher-scoring box is above
    ``iou_threshold``. The greedy pass is OpenCV's (C++, several times faster than numpy
    for the usual tens of candidates); it gets ranks instead of the scores, so the order is
    exactly numpy's stable sort of the float64 scores (equal scores keep input order), not
    OpenCV's float32 rounding of them. Boxes need an area: OpenCV counts two identical
    empty boxes as overlapping (``decode_yolo`` never passes one).
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if b.shape[0] == 0:
        return np.zeros(0, dtype=np.intp)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    ordered = b[order]
    xywh = np.empty_like(ordered)
    xywh[:, :2] = ordered[:, :2]
    np.maximum(ordered[:, 2:] - ordered[:, :2], 0.0, out=xywh[:, 2:])
    ranks = np.arange(len(order), 0, -1, dtype=np.float32)  # exact up to 2**24 boxes
    # OpenCV's stubs say sequences; it takes arrays as they are (no list round trip).
    kept = cv2.dnn.NMSBoxes(
        cast("Sequence[Sequence[float]]", xywh),
        cast("Sequence[float]", ranks),
        0.0,
        float(iou_threshold),
    )
    return order[np.asarray(kept, dtype=np.intp).reshape(-1)]


def pairwise_iou(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """IoU of every box in ``a`` (K, 4) with every box in ``b`` (M, 4): (K, M)."""
    # Width and height together: (K, M, 2) overlaps, (K, 2) and (M, 2) sizes.
    overlap = np.minimum(a[:, None, 2:], b[None, :, 2:]) - np.maximum(
        a[:, None, :2], b[None, :, :2]
    )
    np.maximum(overlap, 0.0, out=overlap)
    inter = overlap[..., 0] * overlap[..., 1]
    size_a = np.maximum(a[:, 2:] - a[:, :2], 0.0)
    size_b = np.maximum(b[:, 2:] - b[:, :2], 0.0)
    area_a = size_a[:, 0] * size_a[:, 1]
    area_b = size_b[:, 0] * size_b[:, 1]
    union = area_a[:, None] + area_b[None, :] - inter
    # Two empty boxes have no overlap worth suppressing (and 0/0 is not an IoU).
    iou: npt.NDArray[np.float64] = np.divide(
        inter, union, out=np.zeros_like(inter), where=union > 0
    )
    return iou


def box_iou(a: BoxXYXY, b: BoxXYXY) -> float:
    """IoU of two x1, y1, x2, y2 boxes (0 when either has no area)."""
    iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = iw * ih
    union = (
        max(a[2] - a[0], 0.0) * max(a[3] - a[1], 0.0)
        + max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0)
        - inter
    )
    return inter / union if union > 0 else 0.0


def decode_yolo(
    output: npt.NDArray[np.floating],
    labels: tuple[str, ...] | list[str],
    letterbox: Letterbox,
    *,
    score_threshold: float = 0.35,
    iou_threshold: float = 0.45,
    max_detections: int = 100,
    class_agnostic: bool = False,
) -> list[Detection]:
    """Detections in frame pixels from a YOLOv8/v11 head, best score first.

    ``output`` is ``[1, 4 + C, N]`` (Ultralytics' export) or ``[1, N, 4 + C]``: rows
    cx, cy, w, h in model pixels, then C class scores already through a sigmoid. An anchor
    counts with its best class when that score is at or above ``score_threshold``. NMS runs
    per class unless ``class_agnostic`` (a car never suppresses a person standing by it).
    Boxes are clipped to the frame; boxes without size or wholly in the padding are dropped.
    Raises ModelError when the output does not fit the labels.
    """
    pred = _anchors_last(output, 4 + len(labels))
    best = pred[4:].max(axis=0)
    # The score test first, on every anchor; the rest only on the few that pass it.
    keep = np.flatnonzero(best >= score_threshold)
    if keep.size == 0:
        return []
    rows = pred[:, keep].astype(np.float64)  # exact: float64 holds every float32
    sized = (rows[2] > 0) & (rows[3] > 0)
    if not sized.all():
        rows = rows[:, sized]
        if rows.shape[1] == 0:
            return []
    conf = rows[4:].max(axis=0)
    if conf.size > _CANDIDATES_MAX:
        rows = rows[:, np.argpartition(-conf, _CANDIDATES_MAX)[:_CANDIDATES_MAX]]
        conf = rows[4:].max(axis=0)
    classes = rows[4:].argmax(axis=0)
    half = rows[2:4] / 2
    boxes = np.concatenate((rows[:2] - half, rows[:2] + half)).T
    shifted = boxes if class_agnostic else _apart_by_class(boxes, classes)
    kept = nms(shifted, conf, iou_threshold)
    frame_boxes = letterbox.to_frame(boxes[kept])
    visible = (frame_boxes[:, 2] > frame_boxes[:, 0]) & (frame_boxes[:, 3] > frame_boxes[:, 1])
    kept, frame_boxes = kept[visible][:max_detections], frame_boxes[visible][:max_detections]
    return [
        Detection(labels[c], s, (b[0], b[1], b[2], b[3]))
        for c, s, b in zip(
            classes[kept].tolist(), conf[kept].tolist(), frame_boxes.tolist(), strict=True
        )
    ]


def _anchors_last(output: npt.NDArray[np.floating], rows: int) -> npt.NDArray[np.floating]:
    """The head as ``(4 + C, N)``, whichever of the two layouts the model exports."""
    pred = np.asarray(output)
    if pred.ndim == 3 and pred.shape[0] == 1:
        pred = pred[0]
    if pred.ndim != 2:
        raise ModelError(f"expected a detection output [1, 4+C, N], got shape {output.shape}")
    if pred.shape[0] == rows:
        return pred
    if pred.shape[1] == rows:
        return pred.T
    raise ModelError(
        f"detection output shape {output.shape} does not fit {rows - 4} labels "
        f"(expected an axis of 4 + {rows - 4} = {rows})"
    )


def _apart_by_class(
    boxes: npt.NDArray[np.float64], classes: npt.NDArray[np.intp]
) -> npt.NDArray[np.float64]:
    """Boxes moved so that boxes of different classes can never overlap (one NMS call)."""
    span = float(boxes.max() - boxes.min()) + 1.0
    shifted: npt.NDArray[np.float64] = boxes + (classes.astype(np.float64) * span)[:, None]
    return shifted
