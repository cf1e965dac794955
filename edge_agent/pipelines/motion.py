"""The motion gate: skip inference on camera frames where nothing moves.

A fixed camera mostly watches an empty or parked scene; running the detector on every
frame of it costs CPU and produces nothing. The gate compares each frame with a running
average of the previous ones on a small grey copy (160 px wide by default), so it costs
a fraction of an inference. A global brightness change (a cloud, street lights, the
camera's auto-exposure) changes every pixel a little and must not count as motion, so each
frame is first brought to the background's brightness ("gain": match the means; or
"gain_offset": match mean and spread). A pixel clipped by the sensor says nothing about
change in the frame; in the background it is a lower bound: after a bright spell the
background holds the saturated level (scaled back by the gain) where the light clipped, and the
unclipped scene there is brighter than that without anything moving. So where the background
was clipped only a pixel darker than it counts, until the background has seen it unclipped
for a while. Polygons in frame pixels mask what always moves but never matters, such as a
clock overlay or a tree.

The gate fails open: during warm-up, and for ``hold_frames`` after the last motion,
frames pass, so an object is never missed because the background was still settling or
because it stopped for a moment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import Field, field_validator

from edge_agent.config_types import StrictConfig

Frame = npt.NDArray[np.uint8]
Grey = npt.NDArray[np.float32]
Point = tuple[float, float]

_SATURATED = 250  # a colour channel at or above this is clipped by the sensor
_KERNEL = np.ones((3, 3), dtype=np.uint8)  # the blur's reach: a clipped pixel taints this far
_BACKGROUND_UNCLIPPED = 0.5
"""A background pixel is taken at its value once its running share of unclipped frames is above
this (after a clipped spell, about 14 frames at the default ``alpha``)."""


class MotionGateConfig(StrictConfig):
    """When a camera frame is worth an inference."""

    enabled: bool = True
    width: int = Field(default=160, ge=16, le=1920, description="analysis width in pixels")
    threshold: float = Field(
        default=12.0, gt=0, le=255, description="grey-level difference that counts as changed"
    )
    min_area: float = Field(
        default=0.0003, gt=0, le=1, description="changed fraction of the unmasked frame"
    )
    alpha: float = Field(default=0.05, gt=0, le=1, description="background learning rate")
    warmup_frames: int = Field(default=5, ge=1)
    hold_frames: int = Field(default=2, ge=0)
    compensation: Literal["gain", "gain_offset", "none"] = "gain"
    masks: list[list[Point]] = Field(
        default_factory=list, description="polygons to ignore, in frame pixels"
    )

    @field_validator("masks")
    @classmethod
    def _polygons(cls, value: list[list[Point]]) -> list[list[Point]]:
        for polygon in value:
            if len(polygon) < 3:
                raise ValueError(f"a mask polygon needs at least 3 points, got {len(polygon)}")
        return value


Mask = npt.NDArray[np.uint8]
"""1 where a pixel takes part, 0 where it does not (OpenCV's mask convention)."""


def _no_compensation(grey: Grey, background: Grey, valid: Mask) -> Grey:
    return grey


def _match_gain(grey: Grey, background: Grey, valid: Mask) -> Grey:
    """Scale the frame so its mean brightness is the background's (a gain change)."""
    mean = cv2.mean(grey, mask=valid)[0]
    if mean <= 1e-3:
        return grey
    factor = np.float32(cv2.mean(background, mask=valid)[0] / mean)
    scaled: Grey = grey * factor
    return scaled


def _match_gain_offset(grey: Grey, background: Grey, valid: Mask) -> Grey:
    """Match mean and standard deviation (a gain and an offset change)."""
    mean, std = cv2.meanStdDev(grey, mask=valid)
    bg_mean, bg_std = cv2.meanStdDev(background, mask=valid)
    if float(std[0, 0]) <= 1e-3:
        return grey
    factor = float(bg_std[0, 0]) / float(std[0, 0])
    matched: Grey = ((grey - np.float32(mean[0, 0])) * np.float32(factor)) + np.float32(
        bg_mean[0, 0]
    )
    return matched


_COMPENSATIONS: dict[str, Callable[[Grey, Grey, Mask], Grey]] = {
    "none": _no_compensation,
    "gain": _match_gain,
    "gain_offset": _match_gain_offset,
}


class MotionGate:
    """Decides per frame whether anything moved; counts frames seen and frames gated."""

    def __init__(self, config: MotionGateConfig) -> None:
        self.config = config
        self.frames_in = 0
        self.frames_gated = 0
        self.last_fraction = 0.0
        """Changed fraction of the unmasked frame at the last check (for tuning)."""
        self._compensate = _COMPENSATIONS[config.compensation]
        self._frame_shape: tuple[int, int] | None = None
        self._small_size = (0, 0)
        self._background: Grey = np.zeros((0, 0), dtype=np.float32)
        self._unclipped: Grey = np.zeros((0, 0), dtype=np.float32)
        """Each background pixel's running share of frames in which it was not clipped."""
        self._valid: npt.NDArray[np.bool_] = np.zeros((0, 0), dtype=np.bool_)
        self._valid_mask: Mask = np.zeros((0, 0), dtype=np.uint8)
        self._valid_count = 1
        self._seen = 0
        self._hold = 0

    def check(self, frame: Frame) -> bool:
        """True when ``frame`` (BGR uint8) should go to the model."""
        self.frames_in += 1
        if not self.config.enabled:
            return True
        grey, usable = self._grey(frame)
        if self._frame_shape != frame.shape[:2]:
            self._reset(frame.shape[0], frame.shape[1], grey)
        moved = self._moved(grey, usable)
        if moved:
            self._hold = self.config.hold_frames
        elif self._seen > self.config.warmup_frames and self._hold > 0:
            self._hold -= 1
            moved = True
        passed = moved or self._seen <= self.config.warmup_frames
        if not passed:
            self.frames_gated += 1
        return passed

    def _grey(self, frame: Frame) -> tuple[Grey, npt.NDArray[np.bool_]]:
        """A small, slightly blurred grey copy, and where no colour channel is clipped.

        Resizing first keeps the colour step cheap; INTER_LINEAR rather than INTER_AREA is
        several times cheaper, and the blur removes the aliasing it leaves on fine texture.
        """
        height = max(1, round(frame.shape[0] * self.config.width / frame.shape[1]))
        small = cv2.resize(frame, (self.config.width, height), interpolation=cv2.INTER_LINEAR)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        blurred: Grey = cv2.GaussianBlur(grey, (3, 3), 0).astype(np.float32)
        # Usable: every channel below the clip level, for the blur's whole 3x3 reach.
        unclipped = cv2.inRange(small, (0, 0, 0), (_SATURATED - 1,) * 3)
        usable: npt.NDArray[np.bool_] = cv2.erode(unclipped, _KERNEL) > 0
        return blurred, usable

    def _reset(self, height: int, width: int, grey: Grey) -> None:
        """A new stream or frame size: start the background and the masks afresh."""
        self._frame_shape = (height, width)
        small_h, small_w = grey.shape
        masked = np.zeros((small_h, small_w), dtype=np.uint8)
        scale = np.asarray([small_w / width, small_h / height], dtype=np.float64)
        for polygon in self.config.masks:
            points = np.round(np.asarray(polygon, dtype=np.float64) * scale).astype(np.int32)
            cv2.fillPoly(masked, [points], 1)
        self._valid = masked == 0
        self._valid_mask = self._valid.view(np.uint8)
        self._valid_count = max(1, int(self._valid.sum()))
        self._background = grey.copy()
        self._unclipped = np.ones_like(grey)
        self._seen = 0
        self._hold = 0

    def _moved(self, grey: Grey, usable: npt.NDArray[np.bool_]) -> bool:
        self._seen += 1
        compensated = self._compensate(grey, self._background, self._valid_mask)
        # A clipped pixel says nothing about change: after a gain step the saturated areas
        # would otherwise differ from the background without anything moving.
        threshold = self.config.threshold
        diff = compensated - self._background
        changed = diff < -threshold
        # Where the background itself was clipped it holds a lower bound of the scene (the
        # saturated level, scaled back by the gain): only a darker pixel is evidence there.
        changed |= (diff > threshold) & (self._unclipped > _BACKGROUND_UNCLIPPED)
        changed &= usable & self._valid
        self.last_fraction = int(np.count_nonzero(changed)) / self._valid_count
        # During warm-up the background is the plain mean of the frames so far: it settles
        # in a few frames instead of the ~1/alpha an exponential average needs.
        alpha = self.config.alpha
        if self._seen <= self.config.warmup_frames:
            alpha = max(alpha, 1.0 / self._seen)
        cv2.accumulateWeighted(compensated, self._background, alpha)
        cv2.accumulateWeighted(usable.view(np.uint8), self._unclipped, alpha)
        return self.last_fraction >= self.config.min_area
