"""Fine-tune a serving scene detector on collected frames (needs torch: ``aiot[train]``).

A pure function from data to ONNX bytes and figures, used by the cloud's ``scene-detector``
training jobs: the frames an edge camera collected, each labelled with the boxes the cloud
detector found in it (pseudo-labels, :mod:`cloud_api.training.images`), teach the edge
model what the cloud model sees there.

The start is the serving version itself: its network is re-created from the ONNX file's
initializers (:func:`load_net`), because the ONNX file is what the registry holds; no torch
state is kept beside it. The exporter folded each batch norm into its convolution, so a
re-created batch norm is the identity plus the folded bias, and it stays frozen (eval mode)
while fine-tuning: a few dozen frames cannot estimate batch statistics, and the network is
then exactly the serving one at step 0 (checked against ONNX Runtime before training).

Every batch is half collected frames and half *replay* frames: streets of the base model's
own training set with their true boxes, so the model learns the new look without forgetting
the old one. The export is the base's layout (YOLOv8 head, same input, same batch axis),
checked in the edge's ONNX Runtime session against torch.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from models import detector_net
from models.detector import TRAIN_SEED
from models.scenes import LabelledFrame, labelled_frames
from shared.errors import ModelError

logger = logging.getLogger(__name__)

REPLAY_FRAMES_PER_SCENE = 4
CHECK_FRAMES = 4  # frames run through torch and ONNX Runtime to check a load or an export

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Settings:
    """How long and how hard to fine-tune."""

    steps: int = 300
    learning_rate: float = 5e-4
    batch: int = 16
    replay_scenes: int = 60
    """Streets of the base's training set replayed (x4 instants); 0: collected frames only."""
    seed: int = 0
    threads: int = detector_net.THREADS


@dataclass(frozen=True, slots=True)
class FineTuned:
    """The candidate and what its training saw and cost."""

    model: bytes
    device: str
    steps: int
    frames: int
    replay_frames: int
    seconds: float
    export_error: float
    """Largest difference between torch and ONNX Runtime on a few frames."""


def device() -> torch.device:
    """CUDA when torch sees a GPU, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _conv_weights(proto: onnx.ModelProto) -> dict[str, list[F32]]:
    """Each Conv node's weight and bias, keyed by the torch module it was exported from
    (the legacy exporter names a node ``/net/<path>/<module>/Conv``)."""
    values = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
    convs: dict[str, list[F32]] = {}
    for node in proto.graph.node:
        parts = node.name.split("/")
        if node.op_type == "Conv" and len(parts) >= 3 and parts[1] == "net":
            convs[parts[-2]] = [np.array(values[name], np.float32) for name in node.input[1:]]
    return convs


def spec_of(model: bytes) -> detector_net.Spec:
    """The base's layout (widths, extra stride-16 layers, batch axis) from its ONNX file;
    ModelError when it is not a network of :mod:`models.detector_net`."""
    proto = onnx.load_from_string(model)
    convs = _conv_weights(proto)
    try:
        widths = tuple(
            int(convs[name][0].shape[0])
            for name in ("s8.0.0", "s8.1.0", "s8.2.0", "s16.0.0", "s16.2.0")
        )
    except KeyError:
        raise ModelError(
            "the base model is not a scene-detector network (models/detector_net.py): its "
            f"convolutions are {sorted(convs)}"
        ) from None
    extra = sum(name.startswith("s16.") for name in convs) - 4
    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    return detector_net.Spec(
        widths=widths, extra=extra, dynamic_batch=not batch.HasField("dim_value")
    )


def load_net(model: bytes) -> tuple[detector_net.Net, detector_net.Spec]:
    """The serving network re-created from its ONNX file, in eval mode; ModelError when the
    file is not this network or the re-created one does not compute what the file does."""
    spec = spec_of(model)
    net = detector_net.Net(spec.widths, spec.extra)
    modules = dict(net.named_modules())
    convs = {name: m for name, m in modules.items() if isinstance(m, nn.Conv2d)}
    weights = _conv_weights(onnx.load_from_string(model))
    if set(weights) != set(convs):
        raise ModelError(
            f"the base model's convolutions {sorted(weights)} are not the network's {sorted(convs)}"
        )
    for name, conv in convs.items():
        weight, bias = weights[name]
        if tuple(weight.shape) != tuple(conv.weight.shape):
            raise ModelError(f"the base model's {name} is {list(weight.shape)}")
        norm = modules.get(name[:-1] + "1") if name.endswith(".0") else None
        _load_conv(conv, norm if isinstance(norm, nn.BatchNorm2d) else None, weight, bias)
    net.eval()
    frames = list(labelled_frames(TRAIN_SEED, 1, CHECK_FRAMES))
    detector_net.check_export(net, model, frames)
    return net, spec


@torch.no_grad()  # type: ignore[misc, unused-ignore]
def _load_conv(conv: nn.Conv2d, norm: nn.BatchNorm2d | None, weight: F32, bias: F32) -> None:
    """One exported convolution into ``conv``; its bias into ``norm`` when the exporter
    folded that batch norm into it (the norm is then the identity plus the bias)."""
    conv.weight.copy_(torch.from_numpy(weight))
    target = conv.bias if norm is None else norm.bias
    assert target is not None
    target.copy_(torch.from_numpy(bias))
    if norm is not None:
        assert norm.running_mean is not None
        assert norm.running_var is not None
        norm.weight.fill_(1.0)
        norm.running_mean.zero_()
        norm.running_var.fill_(1.0 - norm.eps)


def _rate(step: int, steps: int) -> float:
    """A short warm-up, then cosine decay to a tenth."""
    warmup = max(steps // 10, 1)
    if step < warmup:
        return (step + 1) / warmup
    return 0.1 + 0.45 * (1 + math.cos(math.pi * (step - warmup) / max(steps - warmup, 1)))


def _train(
    net: detector_net.Net,
    collected: detector_net.TrainSet,
    replay: detector_net.TrainSet | None,
    settings: Settings,
    where: torch.device,
) -> None:
    """AdamW on mixed batches; batch norms frozen. The loss runs on the CPU (its target
    assignment does), the network on ``where``."""
    rng = np.random.default_rng(settings.seed)
    net.to(where)
    opt = torch.optim.AdamW(net.parameters(), lr=settings.learning_rate, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _rate(s, settings.steps))
    net.train()
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()
    own = settings.batch if replay is None else settings.batch // 2
    own = min(own, len(collected.images))
    other = 0 if replay is None else min(settings.batch - own, len(replay.images))
    for step in range(settings.steps):
        images, boxes, labels = collected.batch(rng, own)
        if replay is not None and other:
            more = replay.batch(rng, other)
            images = torch.cat([images, more[0]])
            boxes, labels = boxes + more[1], labels + more[2]
        cls, box = detector_net.loss(net(images.to(where)).cpu(), boxes, labels)
        opt.zero_grad(set_to_none=True)
        (cls + box).backward()  # type: ignore[no-untyped-call, unused-ignore]
        opt.step()
        schedule.step()
        if step % 100 == 0 or step == settings.steps - 1:
            logger.info(
                "fine-tune step %d/%d: class loss %.3f box loss %.3f",
                *(step, settings.steps, cls.item(), box.item()),
            )
    net.to(torch.device("cpu")).eval()


def fine_tune(
    base: bytes,
    frames: Sequence[LabelledFrame],
    *,
    name: str,
    version: str,
    settings: Settings = Settings(),
) -> FineTuned:
    """The base detector fine-tuned on ``frames`` (their boxes in frame pixels; label -1 or a
    visible share under 0.35 marks a box seen but not learnt), exported as ``name`` ``version``;
    ModelError for a base it cannot re-create or frames without a box to learn."""
    if not frames or not any(bool(np.any(f.labels >= 0)) for f in frames):
        raise ModelError("the frames hold no object to learn")
    where = device()
    logger.info("fine-tuning the scene detector on %s (%d frames)", where, len(frames))
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    torch.use_deterministic_algorithms(where.type == "cpu")
    try:
        started = time.perf_counter()
        net, spec = load_net(base)
        collected = detector_net.TrainSet(frames)
        replay = None
        if settings.replay_scenes:
            shown = labelled_frames(TRAIN_SEED, settings.replay_scenes, REPLAY_FRAMES_PER_SCENE)
            replay = detector_net.TrainSet(shown)
        _train(net, collected, replay, settings, where)
        spec = detector_net.Spec(
            name=name, version=version, widths=spec.widths, extra=spec.extra,
            dynamic_batch=spec.dynamic_batch, description="fine-tuned on collected frames",
        )  # fmt: skip
        with warnings.catch_warnings():  # the legacy exporter is chosen (models/detector_net.py)
            warnings.simplefilter("ignore", DeprecationWarning)  # it says it is deprecated
            model = detector_net.export(net, spec)
        check = list(labelled_frames(TRAIN_SEED, 1, CHECK_FRAMES))
        error = detector_net.check_export(net, model, check, 2 if spec.dynamic_batch else 1)
        return FineTuned(
            model=model, device=where.type, steps=settings.steps, frames=len(frames),
            replay_frames=0 if replay is None else len(replay.images),
            seconds=round(time.perf_counter() - started, 1), export_error=error,
        )  # fmt: skip
    finally:
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(threads)
