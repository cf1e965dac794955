"""The scene-detector model: cars and people in a camera frame, in YOLOv8's ONNX layout.

A tiny anchor-free CNN trained on frames of
:class:`edge_agent.sources.synthetic_scene.SyntheticScene`. Its input and output are those
of an Ultralytics YOLOv8 export, so the agent's postprocessing serves this model and a
user's own ``yolov8n.onnx`` alike:

- ``images``: float32 ``[1, 3, 320, 320]``, RGB / 255, the frame letterboxed (grey 114);
- ``output0``: float32 ``[1, 4 + C, N]``: per anchor point ``cx, cy, w, h`` in input pixels
  and one sigmoid score per class (no objectness).

This module holds what needs no torch: letterboxing, the held-out data, a numpy decode and
NMS, and the evaluation. Training and export live in :mod:`models.detector_net` (torch),
imported only by :func:`build`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edge_agent.sources.synthetic_scene import CLASSES, Actor, SyntheticScene, random_actors
from models.manifest import LabelMetrics, Metrics, ModelEntry, TensorSpec
from shared.digests import sha256_bytes

logger = logging.getLogger(__name__)

NAME = "scene-detector"
VERSION = "1.0.0"
FILE = f"detector-{VERSION}.onnx"
INPUT_SIZE = 320
STRIDE = 8
ANCHORS = (INPUT_SIZE // STRIDE) ** 2  # N: one anchor point per stride-8 cell
PAD_VALUE = 114
FRAME_W, FRAME_H = 640, 360  # the camera the model was trained for

SCORE_THRESHOLD = 0.35
IOU_THRESHOLD = 0.45  # NMS
MATCH_IOU = 0.5  # a detection counts when it overlaps a true box this much
MIN_EVAL_HEIGHT = 30.0  # px in the frame: smaller objects are neither required nor errors
MIN_VISIBLE = 0.5  # fraction of an object that must be unoccluded and in frame to count

TRAIN_SEED = 11
HELD_OUT_SEED = 22
HELD_OUT_SCENES = 60
HELD_OUT_FRAMES_PER_SCENE = 5

F32 = npt.NDArray[np.float32]
Frame = npt.NDArray[np.uint8]
Runner = Callable[[F32], F32]


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How a frame was fitted into the square input: input = frame * scale + (left, top)."""

    scale: float
    left: int
    top: int

    def to_frame(self, boxes: F32) -> F32:
        """Map (K, 4) x1 y1 x2 y2 boxes from input pixels back to frame pixels."""
        offset = np.array([self.left, self.top, self.left, self.top], np.float32)
        return np.asarray((boxes - offset) / self.scale, dtype=np.float32)


def letterbox(frame_bgr: Frame, size: int = INPUT_SIZE) -> tuple[F32, Letterbox]:
    """A BGR frame as the model's ``[1, 3, size, size]`` RGB input in [0, 1], like Ultralytics."""
    h, w = frame_bgr.shape[:2]
    scale = min(size / h, size / w)
    new_w, new_h = round(w * scale), round(h * scale)
    dw, dh = (size - new_w) / 2, (size - new_h) / 2
    top, left = round(dh - 0.1), round(dw - 0.1)
    bottom, right = size - new_h - top, size - new_w - left
    resized = frame_bgr
    if (new_w, new_h) != (w, h):
        resized = np.asarray(
            cv2.resize(frame_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR), np.uint8
        )
    padded = cv2.copyMakeBorder(
        resized, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3
    )
    rgb = padded[:, :, ::-1].transpose(2, 0, 1)[None]
    tensor = np.ascontiguousarray(rgb, dtype=np.float32) / np.float32(255.0)
    return tensor, Letterbox(scale, left, top)


@dataclass(frozen=True, slots=True)
class Detection:
    """One detected object: a box (x1, y1, x2, y2), a class index and its score."""

    box: tuple[float, float, float, float]
    label: int
    score: float


def decode(
    output: F32, score_threshold: float = SCORE_THRESHOLD, iou_threshold: float = IOU_THRESHOLD
) -> list[Detection]:
    """YOLOv8 ``[1, 4 + C, N]`` output -> detections in input pixels, after per-class NMS."""
    rows = output[0].T  # (N, 4 + C)
    scores = rows[:, 4:]
    labels = scores.argmax(axis=1)
    best = scores[np.arange(len(rows)), labels]
    keep = best > score_threshold
    cx, cy, w, h = rows[keep, :4].T
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    labels, best = labels[keep], best[keep]
    found: list[Detection] = []
    for label in np.unique(labels):
        mine = np.flatnonzero(labels == label)
        for i in nms(boxes[mine], best[mine], iou_threshold):
            x1, y1, x2, y2 = (float(v) for v in boxes[mine[i]])
            found.append(Detection((x1, y1, x2, y2), int(label), float(best[mine[i]])))
    return sorted(found, key=lambda d: -d.score)


def nms(boxes: F32, scores: F32, iou_threshold: float) -> list[int]:
    """Greedy non-maximum suppression; indices of the kept boxes, best first."""
    order = list(np.argsort(-scores, kind="stable"))
    kept: list[int] = []
    while order:
        i = int(order.pop(0))
        kept.append(i)
        if order:
            rest = np.array(order)
            order = [int(j) for j in rest[iou(boxes[i], boxes[rest]) <= iou_threshold]]
    return kept


def iou(box: F32, boxes: F32) -> F32:
    """IoU of one x1 y1 x2 y2 box with each row of ``boxes``."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return np.asarray(inter / np.maximum(area + areas - inter, 1e-9), dtype=np.float32)


# -- data ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LabelledFrame:
    """A rendered frame and its truth: boxes (K, 4) in frame pixels, class indices, and how
    much of each object is visible (not occluded by nearer actors, not outside the frame)."""

    image: Frame
    boxes: F32
    labels: npt.NDArray[np.int64]
    visible: F32

    def required(self) -> npt.NDArray[np.bool_]:
        """The objects a detector must find (and the others it may find without penalty)."""
        heights = self.boxes[:, 3] - self.boxes[:, 1]
        return (heights >= MIN_EVAL_HEIGHT) & (self.visible >= MIN_VISIBLE)


def random_scene(rng: np.random.Generator, seed: int) -> SyntheticScene:
    """A street with 0-15 actors over 20 s, random noise level and lighting."""
    count = int(rng.integers(0, 16))
    actors = random_actors(rng, count, width=FRAME_W, height=FRAME_H, duration_s=20.0)
    lighting = [(-1.0, float(rng.uniform(0.55, 1.35)))]
    if rng.random() < 0.5:
        lighting.append((float(rng.uniform(3.0, 20.0)), float(rng.uniform(0.5, 1.4))))
    noise = float(rng.uniform(1.0, 6.0))
    return SyntheticScene(
        width=FRAME_W, height=FRAME_H, seed=seed, actors=actors, noise_std=noise, lighting=lighting
    )


def labelled_frames(seed: int, scenes: int, frames_per_scene: int) -> Iterator[LabelledFrame]:
    """Frames of ``scenes`` random streets, a few random instants of each."""
    for index in range(scenes):
        rng = np.random.default_rng([seed, index])
        scene = random_scene(rng, seed * 100_000 + index)
        for _ in range(frames_per_scene):
            yield labelled_frame(scene, float(rng.uniform(3.0, 20.0)))


def labelled_frame(scene: SyntheticScene, t_s: float) -> LabelledFrame:
    """One frame of a scene with its truth and each object's visible fraction."""
    truth = scene.truth(t_s)
    visible = visible_fractions(scene.actors, scene, t_s, [b.actor for b in truth])
    return LabelledFrame(
        image=scene.render(t_s),
        boxes=np.array([[b.x1, b.y1, b.x2, b.y2] for b in truth], np.float32).reshape(-1, 4),
        labels=np.array([CLASSES.index(b.label) for b in truth], np.int64),
        visible=np.array([visible[b.actor] for b in truth], np.float32),
    )


def visible_fractions(
    actors: Sequence[Actor], scene: SyntheticScene, t_s: float, indices: Sequence[int]
) -> dict[int, float]:
    """Share of each actor's full box that shows: in frame and not behind a nearer box."""
    owner = np.full((scene.height // 2, scene.width // 2), -1, np.int64)
    raw: dict[int, tuple[float, float, float, float]] = {}
    for i in indices:
        cx, cy = actors[i].centre(t_s)
        w, h = actors[i].size
        raw[i] = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    # The scene paints by the box's lower edge (nearer actors last): the same order here.
    for i in sorted(raw, key=lambda k: (raw[k][3], k)):
        x1, y1, x2, y2 = (max(0, round(v / 2)) for v in raw[i])
        owner[y1:y2, x1:x2] = i
    counts = np.bincount(owner[owner >= 0].ravel(), minlength=len(actors))
    return {
        i: float(counts[i]) / max((r[2] - r[0]) * (r[3] - r[1]) / 4.0, 1.0) for i, r in raw.items()
    }


# -- evaluation ---------------------------------------------------------------------------


def detect(run: Runner, frame: Frame, score_threshold: float = SCORE_THRESHOLD) -> list[Detection]:
    """Letterbox, run, decode, and map the boxes back to frame pixels."""
    tensor, fit = letterbox(frame)
    found = decode(run(tensor), score_threshold)
    if not found:
        return []
    boxes = fit.to_frame(np.array([d.box for d in found], np.float32))
    return [
        Detection((float(b[0]), float(b[1]), float(b[2]), float(b[3])), d.label, d.score)
        for b, d in zip(boxes, found, strict=True)
    ]


@dataclass(slots=True)
class Tally:
    """Per class: true positives, false positives, and required objects (and those found)."""

    tp: npt.NDArray[np.int64]
    fp: npt.NDArray[np.int64]
    required: npt.NDArray[np.int64]
    found: npt.NDArray[np.int64]

    @classmethod
    def empty(cls) -> Tally:
        """All counts zero."""
        zeros = [np.zeros(len(CLASSES), np.int64) for _ in range(4)]
        return cls(*zeros)

    def add(self, detections: Sequence[Detection], truth: LabelledFrame) -> None:
        """Match one frame's detections to its truth (greedy by score, per class)."""
        required = truth.required()
        for c in range(len(CLASSES)):
            mine = truth.labels == c
            self.required[c] += int(np.sum(required & mine))
            taken = np.zeros(len(truth.labels), bool)
            for d in (d for d in detections if d.label == c):
                overlaps = iou(np.array(d.box, np.float32), truth.boxes)
                overlaps[~mine | taken] = 0.0
                j = int(np.argmax(overlaps)) if len(overlaps) else -1
                if j < 0 or overlaps[j] < MATCH_IOU:
                    self.fp[c] += 1
                    continue
                taken[j] = True
                if required[j]:  # a hit on a small or hidden object is neither credit nor error
                    self.tp[c] += 1
                    self.found[c] += 1

    def metrics(self) -> Metrics:
        """Precision and recall over all classes and per class."""
        per_label = {
            label: _precision_recall(
                int(self.tp[c]), int(self.fp[c]), int(self.found[c]), int(self.required[c])
            )
            for c, label in enumerate(CLASSES)
        }
        overall = _precision_recall(
            int(self.tp.sum()), int(self.fp.sum()), int(self.found.sum()), int(self.required.sum())
        )
        return Metrics(precision=overall.precision, recall=overall.recall, per_label=per_label)


def _precision_recall(tp: int, fp: int, found: int, required: int) -> LabelMetrics:
    return LabelMetrics(
        precision=round(tp / max(tp + fp, 1), 4),
        recall=round(found / max(required, 1), 4),
        support=required,
    )


def evaluate(run: Runner, frames: Sequence[LabelledFrame]) -> Metrics:
    """Held-out precision/recall at IoU 0.5 after NMS, for objects at least 30 px tall."""
    tally = Tally.empty()
    for frame in frames:
        tally.add(detect(run, frame.image), frame)
    return tally.metrics()


def ort_runner(model: bytes | str, threads: int = 1) -> Runner:
    """A function running the model in ONNX Runtime on ``threads`` CPU threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def run(images: F32) -> F32:
        result: F32 = session.run(["output0"], {"images": images})[0]
        return result

    return run


# -- build --------------------------------------------------------------------------------


def entry(model: bytes, metrics: Metrics) -> ModelEntry:
    """The manifest entry of a built model file."""
    return ModelEntry(
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


def build(out_dir: Path) -> ModelEntry:
    """Generate scenes, train (torch), export, check ORT against torch, evaluate, write."""
    from models import detector_net  # torch: only when building
    from models.vibration import write_atomically

    model = detector_net.train_and_export()
    held_out = list(labelled_frames(HELD_OUT_SEED, HELD_OUT_SCENES, HELD_OUT_FRAMES_PER_SCENE))
    metrics = evaluate(ort_runner(model), held_out)
    logger.info(
        "%s %s: held-out precision %.3f recall %.3f (%s)",
        *(NAME, VERSION, metrics.precision, metrics.recall),
        ", ".join(f"{k} {v.precision:.3f}/{v.recall:.3f}" for k, v in metrics.per_label.items()),
    )
    write_atomically(out_dir / FILE, model)
    return entry(model, metrics)
