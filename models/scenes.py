"""Labelled street frames: the scene detector's training and held-out data.

Each frame is rendered by :class:`edge_agent.sources.synthetic_scene.SyntheticScene` with
its truth: boxes in frame pixels, class indices (in ``CLASSES`` order) and how much of
each object shows, so that training and evaluation can each decide which objects count.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge_agent.sources.synthetic_scene import CLASSES, Actor, SyntheticScene, random_actors

FRAME_W, FRAME_H = 640, 360  # the camera the detector is trained for

F32 = npt.NDArray[np.float32]
Frame = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class LabelledFrame:
    """A rendered frame and its truth: boxes (K, 4) in frame pixels, class indices, and how
    much of each object is visible (not occluded by nearer actors, not outside the frame)."""

    image: Frame
    boxes: F32
    labels: npt.NDArray[np.int64]
    visible: F32


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
