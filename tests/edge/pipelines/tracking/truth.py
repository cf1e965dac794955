"""Detections as a detector would report the synthetic scene's ground truth."""

from __future__ import annotations

import numpy as np

from edge_agent.inference.postprocess import Detection
from edge_agent.sources.synthetic_scene import SyntheticScene

FPS = 10.0
T0 = 1_700_000_000.0


def detections_at(
    scene: SyntheticScene, t_s: float, rng: np.random.Generator | None = None
) -> list[Detection]:
    """The scene's truth as a detector would report it: scores ~0.85, boxes jittering ±1 px."""
    out = []
    for box in scene.truth(t_s):
        jitter = rng.uniform(-1.0, 1.0, size=4) if rng is not None else np.zeros(4)
        score = 0.85 + (float(rng.uniform(-0.03, 0.03)) if rng is not None else 0.0)
        coords = (box.x1 + jitter[0], box.y1 + jitter[1], box.x2 + jitter[2], box.y2 + jitter[3])
        out.append(Detection(box.label, score, coords))
    return out
