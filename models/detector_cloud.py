"""The cloud's scene detector: the edge detector's network, wider and deeper, trained longer
on more streets, exported with a dynamic batch axis.

It answers image escalations (``cloud_api.escalation``): the crops and frames an edge
detector was unsure about. Input and output are the edge model's (YOLOv8 layout, 320 x 320
letterboxed RGB / 255 in, ``[batch, 4 + C, 1600]`` out) except that the batch axis is
``batch``, so the cloud runner scores a whole batch of images in one ``session.run``.
Its card is measured exactly as the edge model's (:func:`models.detector.evaluate` on
:func:`models.detector.held_out`), so the two are comparable.
"""

from __future__ import annotations

import logging

from edge_agent.inference.runtime import Runtime
from edge_agent.sources.synthetic_scene import CLASSES
from models import detector
from models.manifest import ModelCard, TensorSpec
from shared.digests import sha256_bytes

NAME = "scene-detector-cloud"
VERSION = "1.0.0"
FILE = f"{NAME}-{VERSION}.onnx"
WIDTHS = (24, 48, 64, 96, 128)  # the edge model: 16, 32, 48, 64, 96
EXTRA = 2  # conv layers at stride 16 beyond the edge model's four
STEPS = 1200  # as the edge model (a wider net costs ~2x per step)
SCENES = 400  # x 8 instants; the edge model: 300

logger = logging.getLogger(__name__)


def card(model: bytes) -> ModelCard:
    """The manifest entry of a model file, measured on the edge detector's held-out streets."""
    metrics = detector.evaluate(Runtime(model).run, detector.held_out())
    logger.info(
        "%s %s: held-out precision %.3f recall %.3f (%s)",
        *(NAME, VERSION, metrics.precision, metrics.recall),
        ", ".join(f"{k} {v.precision:.3f}/{v.recall:.3f}" for k, v in metrics.per_label.items()),
    )
    size = detector.INPUT_SIZE
    return ModelCard(
        name=NAME,
        version=VERSION,
        file=FILE,
        sha256=sha256_bytes(model),
        size=len(model),
        task="detection",
        inputs=[TensorSpec(name="images", dtype="float32", shape=["batch", 3, size, size])],
        outputs=[
            TensorSpec(
                name="output0", dtype="float32", shape=["batch", 4 + len(CLASSES), detector.ANCHORS]
            )
        ],
        labels=list(CLASSES),
        metrics=metrics,
    )


def build() -> tuple[bytes, ModelCard]:
    """Train and export (torch), then measure the exported file."""
    from models import detector_net  # torch: only when training

    spec = detector_net.Spec(
        name=NAME,
        version=VERSION,
        widths=WIDTHS,
        extra=EXTRA,
        steps=STEPS,
        scenes=SCENES,
        dynamic_batch=True,
        description="anchor-free detector for synthetic street scenes",
    )
    model = detector_net.train_and_export(spec)
    return model, card(model)
