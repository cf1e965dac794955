"""Training and ONNX export of the scene detector (needs torch: ``pip install aiot[train]``).

The network: five 3x3 conv-BN-ReLU layers down to stride 8, three more at stride 16 whose
result is upsampled and added back (so a stride-8 cell sees a whole car), one head conv
and a 1x1 prediction of 4 box + C class channels per stride-8 cell.

Boxes are predicted YOLOv5-style relative to their cell: a centre offset of at most two
strides and a size as exp(.) strides. Target assignment is centre sampling as in FCOS /
YOLOv8: a cell is positive for the smallest object whose centre lies within
clamp(0.3 x size, 0.6, 1.5) strides of the cell's centre (every object gets at least one
cell). Loss: BCE on class scores over all cells (cells inside objects too small or hidden
to be learnt are ignored), GIoU and L1 on the boxes of positive cells.

Training sees 192-row crops of the letterboxed input at random heights (a 640x360 frame
fills rows 70-250), which cuts the cost by 40 %; the network is fully convolutional and
the exported graph takes the full 320x320 input. Frames are letterboxed by the edge's own
code, and the export is checked in the edge's ONNX Runtime session.
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import onnx
import torch
import torch.nn.functional as fn
from torch import Tensor, nn

from edge_agent.inference.runtime import Runtime
from edge_agent.sources.synthetic_scene import CLASSES
from models.detector import ANCHORS, INPUT_SIZE, NAME, STRIDE, TRAIN_SEED, VERSION
from models.scenes import LabelledFrame, labelled_frames
from shared.errors import ModelError
from shared.yolo import letterbox

logger = logging.getLogger(__name__)

WIDTHS = (16, 32, 48, 64, 96)
CROP_ROWS = 192  # training crops: 192 rows of the 320x320 input, at random heights
TRAIN_SCENES = 300
TRAIN_FRAMES_PER_SCENE = 8
STEPS = 1200
BATCH = 16
LR = 3e-3
THREADS = 2
MIN_TRAIN_VISIBLE = 0.35
MIN_TRAIN_PX = 3.0  # input pixels: smaller slivers are ignored, not learnt
MAX_EXPORT_ERROR = 1e-3
OPSET = 17
C = len(CLASSES)


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class Net(nn.Module):  # type: ignore[misc, unused-ignore]  # torch is untyped without torch
    """Raw predictions ``[B, 4 + C, H/8, W/8]``: dx, dy, log w, log h, class logits.

    ``widths`` are the channels of the five stages; ``extra`` adds that many more
    conv layers at stride 16 (the cloud's larger detector uses both).
    """

    def __init__(self, widths: tuple[int, ...] = WIDTHS, extra: int = 0) -> None:
        super().__init__()
        w = widths
        self.s8 = nn.Sequential(
            _conv(3, w[0], 2), _conv(w[0], w[1], 2), _conv(w[1], w[2], 2), _conv(w[2], w[2], 1)
        )
        self.s16 = nn.Sequential(
            _conv(w[2], w[3], 2),
            _conv(w[3], w[3], 1),
            _conv(w[3], w[4], 1),
            _conv(w[4], w[4], 1),
            *(_conv(w[4], w[4], 1) for _ in range(extra)),
        )
        self.lateral = nn.Conv2d(w[4], w[2], 1)
        predict = nn.Conv2d(w[2], 4 + C, 1)
        with torch.no_grad():  # start with scores ~0.01 (RetinaNet's prior): a calm first step
            if predict.bias is not None:
                predict.bias[4:] = -math.log((1 - 0.01) / 0.01)
        self.head = nn.Sequential(_conv(w[2], w[2], 1), predict)

    def forward(self, x: Tensor) -> Tensor:
        a = self.s8(x)
        b = self.lateral(self.s16(a))
        return self.head(a + fn.interpolate(b, scale_factor=2.0, mode="nearest"))  # type: ignore[no-any-return, unused-ignore]


def anchors(rows: int, cols: int) -> Tensor:
    """Cell centres ``[2, rows * cols]`` (x, y) in input pixels, row-major like the output."""
    ys, xs = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    return (torch.stack([xs, ys]).reshape(2, -1).float() + 0.5) * STRIDE


def boxes_from(raw: Tensor, points: Tensor) -> Tensor:
    """``[B, 4, P]`` raw box channels -> cx, cy, w, h in input pixels."""
    centre = points + (torch.sigmoid(raw[:, :2]) * 4.0 - 2.0) * STRIDE
    size = torch.exp(raw[:, 2:4].clamp(max=6.0)) * STRIDE
    return torch.cat([centre, size], dim=1)


class Exported(nn.Module):  # type: ignore[misc, unused-ignore]
    """The net plus YOLOv8's decode: ``[1, 3, 320, 320]`` -> ``[1, 4 + C, N]``."""

    points: Tensor

    def __init__(self, net: Net) -> None:
        super().__init__()
        self.net = net
        cells = INPUT_SIZE // STRIDE
        self.register_buffer("points", anchors(cells, cells)[None])

    def forward(self, images: Tensor) -> Tensor:
        raw = self.net(images).flatten(2)
        return torch.cat([boxes_from(raw[:, :4], self.points), torch.sigmoid(raw[:, 4:])], dim=1)


# -- data ---------------------------------------------------------------------------------


class TrainSet:
    """Letterboxed input images (uint8 RGB, HWC) and per-frame targets in input pixels."""

    def __init__(self, frames: Iterable[LabelledFrame]) -> None:
        images: list[npt.NDArray[np.uint8]] = []
        self.targets: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]] = []
        for frame in frames:
            tensor, fit = letterbox(frame.image, (INPUT_SIZE, INPUT_SIZE))
            images.append(np.rint(tensor[0].transpose(1, 2, 0) * 255.0).astype(np.uint8))
            offset = np.array([fit.pad_x, fit.pad_y, fit.pad_x, fit.pad_y], np.float32)
            boxes = frame.boxes * fit.scale + offset
            w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
            learn = (frame.visible >= MIN_TRAIN_VISIBLE) & (w >= MIN_TRAIN_PX) & (h >= MIN_TRAIN_PX)
            # Label -1: an object seen but not learnt; its cells are left out of the loss.
            labels = np.where(learn, frame.labels, -1)
            self.targets.append((boxes.astype(np.float32), labels))
        self.images = np.stack(images)

    def batch(
        self, rng: np.random.Generator, size: int
    ) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """A random batch of crops, half of them mirrored left-right.

        Each crop is CROP_ROWS of the input starting at a random multiple of 16 rows, so the
        net sees the grey letterbox bands in every extent it meets at inference (a fixed
        crop teaches it that grey ends a few rows above the picture, and it then finds cars
        along the picture's top edge). Objects cut by the crop are learnt only if most of
        them remains.
        """
        index = rng.choice(len(self.images), size, replace=False)
        flips = rng.random(size) < 0.5
        starts = rng.integers(0, (INPUT_SIZE - CROP_ROWS) // 16 + 1, size) * 16
        crops = np.empty((size, CROP_ROWS, INPUT_SIZE, 3), np.float32)
        boxes, labels = [], []
        for k, i in enumerate(index):
            top = int(starts[k])
            crop = self.images[i, top : top + CROP_ROWS]
            b, lab = self.targets[i]
            if flips[k]:
                crop = crop[:, ::-1]
                b = np.stack([INPUT_SIZE - b[:, 2], b[:, 1], INPUT_SIZE - b[:, 0], b[:, 3]], 1)
            crops[k] = crop
            y1 = np.clip(b[:, 1] - top, 0, CROP_ROWS)
            y2 = np.clip(b[:, 3] - top, 0, CROP_ROWS)
            kept = (y2 - y1) / np.maximum(b[:, 3] - b[:, 1], 1e-6)
            shown = y2 > y1
            lab = np.where(kept >= MIN_TRAIN_VISIBLE + 0.25, lab, -1)[shown]
            b = np.stack([b[:, 0], y1, b[:, 2], y2], 1)[shown]
            boxes.append(torch.from_numpy(np.ascontiguousarray(b, np.float32)).reshape(-1, 4))
            labels.append(torch.from_numpy(np.ascontiguousarray(lab)))
        crops /= 255.0
        tensor = torch.from_numpy(np.ascontiguousarray(crops.transpose(0, 3, 1, 2)))
        return tensor, boxes, labels


# -- loss ---------------------------------------------------------------------------------


def assign(boxes: Tensor, labels: Tensor, points: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Centre sampling: (matched object per cell or -1, positive mask, ignored mask)."""
    count = points.shape[1]
    if len(boxes) == 0:
        none = torch.zeros(count, dtype=torch.bool)
        return torch.full((count,), -1), none, none
    px, py = points[0][:, None], points[1][:, None]
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    rx = (0.3 * w).clamp(0.6 * STRIDE, 1.5 * STRIDE)
    ry = (0.3 * h).clamp(0.6 * STRIDE, 1.5 * STRIDE)
    learn = labels >= 0
    near = ((px - cx).abs() <= rx) & ((py - cy).abs() <= ry) & learn
    area = torch.where(near, w * h, torch.full_like(near, math.inf, dtype=torch.float32))
    smallest = area.argmin(dim=1)
    positive = near.any(dim=1)
    inside = (px >= boxes[:, 0]) & (px <= boxes[:, 2]) & (py >= boxes[:, 1]) & (py <= boxes[:, 3])
    ignored = (inside & ~learn).any(dim=1) & ~positive
    return torch.where(positive, smallest, -1), positive, ignored


def giou(a: Tensor, b: Tensor) -> Tensor:
    """Generalised IoU of matching rows of two ``[K, 4]`` x1 y1 x2 y2 tensors."""
    inter = (torch.min(a[:, 2:], b[:, 2:]) - torch.max(a[:, :2], b[:, :2])).clamp(min=0).prod(1)
    area_a, area_b = (a[:, 2:] - a[:, :2]).prod(1), (b[:, 2:] - b[:, :2]).prod(1)
    union = area_a + area_b - inter
    hull = (torch.max(a[:, 2:], b[:, 2:]) - torch.min(a[:, :2], b[:, :2])).prod(1)
    return inter / union - (hull - union) / hull


def xyxy(cxcywh: Tensor) -> Tensor:
    """``[K, 4]`` cx cy w h -> x1 y1 x2 y2."""
    half = cxcywh[:, 2:] / 2
    return torch.cat([cxcywh[:, :2] - half, cxcywh[:, :2] + half], dim=1)


def loss(raw: Tensor, boxes: list[Tensor], labels: list[Tensor]) -> tuple[Tensor, Tensor]:
    """(class loss, box loss) of a batch; ``raw`` is the net's ``[B, 4 + C, H, W]``."""
    rows, cols = raw.shape[2:]
    points = anchors(rows, cols)
    raw = raw.flatten(2)
    logits = raw[:, 4:]
    pred = boxes_from(raw[:, :4], points)
    cls_target = torch.zeros_like(logits)
    weight = torch.ones_like(logits)
    pred_pos, true_pos = [], []
    for k in range(raw.shape[0]):
        matched, positive, ignored = assign(boxes[k], labels[k], points)
        weight[k, :, ignored] = 0.0
        if positive.any():
            cls_target[k, labels[k][matched[positive]], positive.nonzero()[:, 0]] = 1.0
            pred_pos.append(pred[k, :, positive].T)
            true_pos.append(boxes[k][matched[positive]])
    n = max(sum(len(p) for p in pred_pos), 1)
    cls = fn.binary_cross_entropy_with_logits(logits, cls_target, weight, reduction="sum") / n
    if not pred_pos:
        return cls, raw.sum() * 0.0
    p, t = xyxy(torch.cat(pred_pos)), torch.cat(true_pos)
    box = 2.0 * (1.0 - giou(p, t)).mean() + 0.5 * ((p - t).abs() / STRIDE).mean()
    return cls, box


# -- training and export ------------------------------------------------------------------


def train(
    data: TrainSet,
    steps: int = STEPS,
    seed: int = 0,
    widths: tuple[int, ...] = WIDTHS,
    extra: int = 0,
) -> Net:
    """AdamW with warm-up and cosine decay, fixed seeds, deterministic kernels."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = Net(widths, extra)
    net.to(memory_format=torch.channels_last)  # type: ignore[call-overload, unused-ignore]  # ~15 % faster on CPU
    decay = [p for n, p in net.named_parameters() if p.ndim > 1]
    other = [p for n, p in net.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 5e-4}, {"params": other, "weight_decay": 0.0}], lr=LR
    )
    warmup = max(steps // 20, 1)

    def rate(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(steps - warmup, 1))) + 0.01

    schedule = torch.optim.lr_scheduler.LambdaLR(opt, rate)
    net.train()
    started = time.perf_counter()
    for step in range(steps):
        images, boxes, labels = data.batch(rng, BATCH)
        cls, box = loss(net(images.to(memory_format=torch.channels_last)), boxes, labels)
        opt.zero_grad(set_to_none=True)
        (cls + box).backward()  # type: ignore[no-untyped-call, unused-ignore]
        opt.step()
        schedule.step()
        if step % 200 == 0 or step == steps - 1:
            logger.info(
                "step %d/%d: class loss %.3f box loss %.3f (%.0f s)",
                *(step, steps, cls.item(), box.item(), time.perf_counter() - started),
            )
    net.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload, unused-ignore]
    return net.eval()  # type: ignore[no-any-return, unused-ignore]


@dataclass(frozen=True, slots=True)
class Spec:
    """What to build: the edge's detector by default, the cloud's with its own values."""

    name: str = NAME
    version: str = VERSION
    widths: tuple[int, ...] = WIDTHS
    extra: int = 0  # more conv layers at stride 16
    steps: int = STEPS
    scenes: int = TRAIN_SCENES
    dynamic_batch: bool = False  # a "batch" input axis (the cloud runs batches)
    description: str = "tiny anchor-free detector for synthetic street scenes"


def export(net: Net, spec: Spec = Spec()) -> bytes:
    """The legacy (TorchScript) exporter at opset 17, with YOLO-style metadata added."""
    model = Exported(net).eval()
    dummy = torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE)
    buffer = io.BytesIO()
    axes = {"images": {0: "batch"}, "output0": {0: "batch"}} if spec.dynamic_batch else None
    torch.onnx.export(
        model,
        (dummy,),
        buffer,  # type: ignore[arg-type, unused-ignore]  # a file object works and is documented
        input_names=["images"],
        output_names=["output0"],
        opset_version=OPSET,
        dynamo=False,
        do_constant_folding=True,
        dynamic_axes=axes,
    )
    proto = onnx.load_from_string(buffer.getvalue())
    if spec.dynamic_batch:
        fix_output_shape(proto)
    proto.doc_string = f"{spec.name} {spec.version}: cars and persons, YOLOv8 output layout"
    # The keys an Ultralytics export carries, so tools that read them work here too.
    names = "{" + ", ".join(f"{i}: '{c}'" for i, c in enumerate(CLASSES)) + "}"
    metadata = {
        "description": f"{spec.name} (aiot): {spec.description}",
        "version": spec.version,
        "task": "detect",
        "stride": str(STRIDE),
        "imgsz": f"[{INPUT_SIZE}, {INPUT_SIZE}]",
        "names": names,
    }
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto, full_check=True)
    return bytes(proto.SerializeToString())


def fix_output_shape(proto: onnx.ModelProto) -> None:
    """Name the output's fixed sizes: with a dynamic batch axis the legacy exporter leaves
    the Concat's channel axis symbolic, and a reader (the cloud registry) needs 4 + C."""
    dims = proto.graph.output[0].type.tensor_type.shape.dim
    dims[1].dim_value = 4 + C
    dims[2].dim_value = ANCHORS


def check_export(net: Net, model: bytes, frames: list[LabelledFrame], batch: int = 1) -> float:
    """Largest difference between torch and ONNX Runtime on a few real frames.

    With ``batch`` > 1 the frames run through ONNX Runtime ``batch`` at a time.
    """
    run = Runtime(model).run
    wrapped = Exported(net).eval()
    tensors = [letterbox(frame.image, (INPUT_SIZE, INPUT_SIZE))[0] for frame in frames]
    worst = 0.0
    for start in range(0, len(tensors), batch):
        tensor = np.concatenate(tensors[start : start + batch])
        with torch.no_grad():
            expected = wrapped(torch.from_numpy(tensor)).numpy()
        got = run(tensor)
        if got.shape != (len(tensor), 4 + C, ANCHORS):
            raise ModelError(f"{NAME}: ONNX output has shape {got.shape}")
        worst = max(worst, float(np.abs(got - expected).max()))
    if worst > MAX_EXPORT_ERROR:
        raise ModelError(f"{NAME}: ONNX Runtime differs from torch by {worst:.2e}")
    return worst


def train_and_export(spec: Spec = Spec()) -> bytes:
    """The whole build on ``THREADS`` threads, deterministically; returns the ONNX bytes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    try:
        started = time.perf_counter()
        data = TrainSet(labelled_frames(TRAIN_SEED, spec.scenes, TRAIN_FRAMES_PER_SCENE))
        logger.info(
            "%s: %d training frames in %.0f s",
            spec.name,
            len(data.images),
            time.perf_counter() - started,
        )
        net = train(data, spec.steps, widths=spec.widths, extra=spec.extra)
        model = export(net, spec)
        batch = 4 if spec.dynamic_batch else 1
        error = check_export(net, model, list(labelled_frames(TRAIN_SEED, 2, 4)), batch)
        logger.info("%s: ONNX Runtime matches torch within %.1e", spec.name, error)
        return model
    finally:
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(threads)
