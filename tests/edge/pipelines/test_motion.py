"""The motion gate on synthetic street frames: lighting is not motion, objects are, masks hide."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from edge_agent.pipelines.motion import MotionGate, MotionGateConfig
from edge_agent.sources.synthetic_scene import Actor, SyntheticScene

FPS = 10.0
CLOCK = [(4.0, 4.0), (390.0, 4.0), (390.0, 50.0), (4.0, 50.0)]  # where the overlay is


def frames(scene: SyntheticScene, seconds: float) -> list[np.ndarray]:
    return [scene.render(i / FPS) for i in range(int(seconds * FPS))]


def with_clock(frame: np.ndarray, index: int) -> np.ndarray:
    """A camera's burnt-in timestamp: it changes every frame and is never interesting."""
    out = frame.copy()
    text = f"2026-11-22 10:15:{index % 60:02d}.{index % 10}"
    cv2.putText(out, text, (12, 36), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (255, 255, 255), 2)
    return out


def passed(gate: MotionGate, stream: list[np.ndarray]) -> list[bool]:
    return [gate.check(frame) for frame in stream]


@pytest.mark.parametrize("compensation", ["gain", "gain_offset"])
def test_static_scene_with_noise_and_lighting_changes_is_gated(compensation: str) -> None:
    scene = SyntheticScene(seed=3, noise_std=2.0, lighting=[(2.0, 0.55), (5.0, 1.35), (8.0, 0.8)])
    gate = MotionGate(MotionGateConfig.model_validate({"compensation": compensation}))
    passed(gate, frames(scene, 12.0))
    assert gate.frames_in == 120
    assert gate.frames_gated >= 0.9 * gate.frames_in


def test_without_compensation_the_same_lighting_change_looks_like_motion() -> None:
    """The control for the test above: the scene's lighting change is big enough to matter."""
    scene = SyntheticScene(seed=3, noise_std=2.0, lighting=[(2.0, 0.55), (5.0, 1.35)])
    gate = MotionGate(MotionGateConfig(compensation="none"))
    passed(gate, frames(scene, 8.0))
    assert gate.frames_gated < 0.9 * gate.frames_in


@pytest.mark.parametrize(
    ("actor", "label"),
    [
        (Actor("car", 1.0, (-40.0, 300.0), (120.0, 0.0), (80.0, 40.0)), "car"),
        (Actor("person", 1.0, (100.0, 120.0), (30.0, 0.0), (14.0, 36.0)), "small person"),
    ],
)
def test_a_moving_object_passes_the_gate(actor: Actor, label: str) -> None:
    scene = SyntheticScene(seed=5, actors=[actor], lighting=[(3.0, 0.7)])
    gate = MotionGate(MotionGateConfig())
    stream = frames(scene, 6.0)
    results = passed(gate, stream)
    moving = [r for i, r in enumerate(results) if scene.truth(i / FPS) and i / FPS >= 1.5]
    assert moving, label
    assert all(moving), f"{label}: missed {moving.count(False)} of {len(moving)} frames"
    before = results[int(0.5 * FPS) + 1 : int(1.0 * FPS)]  # after warm-up, before it enters
    assert not any(before)


def test_a_masked_clock_overlay_is_ignored() -> None:
    scene = SyntheticScene(seed=7, noise_std=2.0)
    stream = [with_clock(f, i) for i, f in enumerate(frames(scene, 8.0))]
    masked = MotionGate(MotionGateConfig(masks=[CLOCK]))
    passed(masked, stream)
    assert masked.frames_gated >= 0.9 * masked.frames_in
    unmasked = MotionGate(MotionGateConfig())
    passed(unmasked, stream)
    assert unmasked.frames_gated < 0.5 * unmasked.frames_in


def test_motion_outside_the_mask_still_counts() -> None:
    car = Actor("car", 1.0, (-40.0, 300.0), (150.0, 0.0), (80.0, 40.0))
    scene = SyntheticScene(seed=7, actors=[car])
    stream = [with_clock(f, i) for i, f in enumerate(frames(scene, 5.0))]
    gate = MotionGate(MotionGateConfig(masks=[CLOCK]))
    results = passed(gate, stream)
    assert all(r for i, r in enumerate(results) if scene.truth(i / FPS))


def test_warm_up_frames_pass_and_a_disabled_gate_passes_everything() -> None:
    still = SyntheticScene(seed=1).render(0.0)
    gate = MotionGate(MotionGateConfig(warmup_frames=4, hold_frames=0))
    assert passed(gate, [still] * 6) == [True] * 4 + [False] * 2
    off = MotionGate(MotionGateConfig(enabled=False))
    assert passed(off, [still] * 5) == [True] * 5
    assert (off.frames_in, off.frames_gated) == (5, 0)


def test_hold_frames_keep_the_gate_open_after_motion_stops() -> None:
    still = SyntheticScene(seed=1).render(0.0)
    moved = still.copy()
    moved[100:200, 100:200] = 255 - moved[100:200, 100:200]
    gate = MotionGate(MotionGateConfig(warmup_frames=2, hold_frames=2, alpha=0.01))
    results = passed(gate, [still] * 4 + [moved] + [still] * 4)
    assert results[4:] == [True, True, True, False, False]


def test_a_new_frame_size_restarts_the_background() -> None:
    gate = MotionGate(MotionGateConfig(warmup_frames=2))
    small = np.full((90, 160, 3), 80, dtype=np.uint8)
    big = np.full((360, 640, 3), 80, dtype=np.uint8)
    assert passed(gate, [small] * 3 + [big] * 3) == [True, True, False, True, True, False]


def test_config_refuses_unknown_keys_and_degenerate_masks() -> None:
    with pytest.raises(ValidationError, match="extra"):
        MotionGateConfig.model_validate({"treshold": 10})
    with pytest.raises(ValidationError, match="at least 3 points"):
        MotionGateConfig.model_validate({"masks": [[[0, 0], [10, 10]]]})


def test_light_dropping_after_a_bright_spell_that_clipped_the_sensor_is_not_motion() -> None:
    """Where the bright spell saturated the sensor the background holds the clipped level; the
    scene coming back brighter than that level is not motion (a darker pixel would be)."""
    scene = SyntheticScene(seed=3, noise_std=3.0, lighting=[(1.0, 1.4), (10.0, 0.8)])
    gate = MotionGate(MotionGateConfig(warmup_frames=5))
    passed(gate, frames(scene, 16.0))
    assert gate.frames_in - gate.frames_gated == 5  # the warm-up frames only
