"""The scene-detector model: cars and people in a camera frame, in YOLOv8's ONNX layout.

A tiny anchor-free CNN trained on frames of
:class:`edge_agent.sources.synthetic_scene.SyntheticScene`. Its input and output are those
of an Ultralytics YOLOv8 export, so the agent's postprocessing serves this model and a
user's own ``yolov8n.onnx`` alike:

- ``images``: float32 ``[1, 3, 320, 320]``, RGB / 255, the frame letterboxed (grey 114);
- ``output0``: float32 ``[1, 4 + C, N]``: per anchor point ``cx, cy, w, h`` in input pixels
  and one sigmoid score per class (no objectness).

This module holds what needs no torch: the model's layout and its model card. The card is
measured with the edge's own code (its letterbox, decode and NMS from
:mod:`shared.yolo`, its ONNX Runtime session), so it states what an
agent will see. Training and export live in :mod:`models.detector_net` (torch), which
imports this module, never the reverse.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge_agent.inference.runtime import Runtime
from edge_agent.sources.synthetic_scene import CLASSES
from models.manifest import LabelMetrics, Metrics, ModelCard, TensorSpec
from models.quality import Quality
from models.scenes import LabelledFrame, labelled_frames
from shared.digests import sha256_bytes
from shared.yolo import Detection, decode_yolo, letterbox, pairwise_iou

logger = logging.getLogger(__name__)

NAME = "scene-detector"
VERSION = "1.0.0"
FILE = f"detector-{VERSION}.onnx"
INPUT_SIZE = 320
STRIDE = 8
ANCHORS = (INPUT_SIZE // STRIDE) ** 2  # N: one anchor point per stride-8 cell

SCORE_THRESHOLD = 0.35  # the card's operating point; NMS at the edge's default IoU (0.45)
MATCH_IOU = 0.5  # a detection counts when it overlaps a true box this much
MIN_EVAL_HEIGHT = 30.0  # px in the frame: smaller objects are neither required nor errors
MIN_VISIBLE = 0.5  # fraction of an object that must be unoccluded and in frame to count

TRAIN_SEED = 11
HELD_OUT_SEED = 22
HELD_OUT_SCENES = 60
HELD_OUT_FRAMES_PER_SCENE = 5

F32 = npt.NDArray[np.float32]
Frame = npt.NDArray[np.uint8]
Runner = Callable[[F32], npt.NDArray[np.floating]]
"""The model as a function of its input: ``Runtime(model).run``, as an agent runs it."""


def detect(run: Runner, frame: Frame, score_threshold: float = SCORE_THRESHOLD) -> list[Detection]:
    """What an agent finds in ``frame``: the edge's letterbox, the model, the edge's decode."""
    tensor, geometry = letterbox(frame, (INPUT_SIZE, INPUT_SIZE))
    return decode_yolo(run(tensor), CLASSES, geometry, score_threshold=score_threshold)


def required(truth: LabelledFrame) -> npt.NDArray[np.bool_]:
    """The objects a detector must find (and the others it may find without penalty)."""
    heights = truth.boxes[:, 3] - truth.boxes[:, 1]
    return (heights >= MIN_EVAL_HEIGHT) & (truth.visible >= MIN_VISIBLE)


@dataclass(slots=True)
class Tally:
    """Per class: true positives, false positives, and required objects."""

    tp: npt.NDArray[np.int64]
    fp: npt.NDArray[np.int64]
    required: npt.NDArray[np.int64]

    @classmethod
    def empty(cls) -> Tally:
        """All counts zero."""
        zeros = [np.zeros(len(CLASSES), np.int64) for _ in range(3)]
        return cls(*zeros)

    def add(self, detections: Sequence[Detection], truth: LabelledFrame) -> None:
        """Match one frame's detections to its truth (greedy by score, per class)."""
        must = required(truth)
        truth_boxes = truth.boxes.astype(np.float64)
        for c, label in enumerate(CLASSES):
            mine = truth.labels == c
            self.required[c] += int(np.sum(must & mine))
            taken = np.zeros(len(truth.labels), bool)
            for overlaps in _overlaps(detections, label, truth_boxes):  # best score first
                overlaps[~mine | taken] = 0.0
                j = int(np.argmax(overlaps)) if len(overlaps) else -1
                if j < 0 or overlaps[j] < MATCH_IOU:
                    self.fp[c] += 1
                    continue
                taken[j] = True
                if must[j]:  # a hit on a small or hidden object is neither credit nor error
                    self.tp[c] += 1

    def metrics(self) -> Metrics:
        """Precision and recall over all classes and per class."""
        per_label = {
            label: LabelMetrics.count(
                hits=int(self.tp[c]),
                predicted=int(self.tp[c] + self.fp[c]),
                actual=int(self.required[c]),
            )
            for c, label in enumerate(CLASSES)
        }
        overall = LabelMetrics.count(
            hits=int(self.tp.sum()),
            predicted=int(self.tp.sum() + self.fp.sum()),
            actual=int(self.required.sum()),
        )
        return Metrics(precision=overall.precision, recall=overall.recall, per_label=per_label)


def _overlaps(
    detections: Sequence[Detection], label: str, truth_boxes: npt.NDArray[np.float64]
) -> Iterator[npt.NDArray[np.float64]]:
    """For each detection of ``label`` in order, its IoU with every true box."""
    boxes = [d.box for d in detections if d.label == label]
    if boxes:
        yield from pairwise_iou(np.array(boxes, np.float64), truth_boxes)


def evaluate(run: Runner, frames: Sequence[LabelledFrame]) -> Metrics:
    """Held-out precision/recall at IoU 0.5 after NMS, for objects at least 30 px tall."""
    tally = Tally.empty()
    for frame in frames:
        tally.add(detect(run, frame.image), frame)
    return tally.metrics()


def quality(model: bytes, frames: Sequence[LabelledFrame]) -> Quality:
    """A detector's figures as the training gate compares them, counted as :func:`evaluate`
    counts: ``windows`` are frames, ``normal`` the detections made (each a possible false
    alarm), ``faults`` the objects to find; ``false_alarm_rate`` is the share of detections
    that match no object (1 - precision); ``accuracy`` is not measured."""
    run = Runtime(model).run
    tally = Tally.empty()
    for frame in frames:
        tally.add(detect(run, frame.image), frame)
    hits, misses, objects = int(tally.tp.sum()), int(tally.fp.sum()), int(tally.required.sum())
    made = hits + misses
    return Quality(
        windows=len(frames),
        normal=made,
        faults=objects,
        false_alarm_rate=round(misses / made, 4) if made else None,
        recall=round(hits / objects, 4) if objects else None,
        accuracy=None,
    )


def held_out() -> list[LabelledFrame]:
    """The streets the card is measured on (never seen in training)."""
    return list(labelled_frames(HELD_OUT_SEED, HELD_OUT_SCENES, HELD_OUT_FRAMES_PER_SCENE))


def card(model: bytes) -> ModelCard:
    """The manifest entry of a model file, its metrics measured on the held-out streets."""
    metrics = evaluate(Runtime(model).run, held_out())
    logger.info(
        "%s %s: held-out precision %.3f recall %.3f (%s)",
        *(NAME, VERSION, metrics.precision, metrics.recall),
        ", ".join(f"{k} {v.precision:.3f}/{v.recall:.3f}" for k, v in metrics.per_label.items()),
    )
    return ModelCard(
        name=NAME,
        version=VERSION,
        file=FILE,
        sha256=sha256_bytes(model),
        size=len(model),
        task="detection",
        inputs=[TensorSpec(name="images", dtype="float32", shape=[1, 3, INPUT_SIZE, INPUT_SIZE])],
        outputs=[TensorSpec(name="output0", dtype="float32", shape=[1, 4 + len(CLASSES), ANCHORS])],
        labels=list(CLASSES),
        metrics=metrics,
    )
