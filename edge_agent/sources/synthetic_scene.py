"""A synthetic street camera: a static textured scene with cars and people moving across it.

Pure numpy and OpenCV drawing, no I/O, deterministic for a seed. It stands in for a real
fixed camera, both for the demo camera source and for generating the detector's training
data, and it knows the ground truth of every frame (:meth:`SyntheticScene.truth`).

The scene: a wall or hedge at the top, a pavement with a kerb, a road with lane marks, a
pole and a manhole (static shapes a detector must not report), a texture that depends on
the seed, fresh sensor noise in every frame and optional lighting changes. Actors move in
straight lines at constant speed, may pause, and vanish at ``exit_s`` or when they leave
the frame.

(Over 400 lines: one noun, the scene; its background, actors and drawing share the scene's
geometry and random state, and the detector's training data reads its ground truth.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

CLASSES: tuple[str, ...] = ("car", "person")

Frame = npt.NDArray[np.uint8]
_F32 = npt.NDArray[np.float32]
Colour = tuple[int, int, int]

_SHIFT = 4  # cv2 fixed-point bits: sub-pixel positions, so slow actors move smoothly
_ONE = 1 << _SHIFT
_RAMP_S = 1.0  # a lighting change takes this long
_MIN_VISIBLE_PX = 1.0  # a clipped box narrower or lower than this is not visible


@dataclass(frozen=True, slots=True)
class Actor:
    """An object moving in a straight line across the scene, possibly pausing."""

    label: str  # one of CLASSES
    enter_s: float  # scene time it appears
    start_xy: tuple[float, float]  # centre (px) at enter_s
    velocity: tuple[float, float]  # px/s while moving
    size: tuple[float, float]  # (w, h) px
    pauses: tuple[tuple[float, float], ...] = ()  # (at_s, for_s): stands still, in scene time
    exit_s: float | None = None  # disappears (else when it leaves the frame)

    def __post_init__(self) -> None:
        if self.label not in CLASSES:
            raise ValueError(f"unknown label {self.label!r}: expected one of {CLASSES}")
        if self.size[0] <= 0 or self.size[1] <= 0:
            raise ValueError(f"size must be positive, got {self.size}")
        if any(for_s < 0 for _, for_s in self.pauses):
            raise ValueError(f"pause durations must be >= 0, got {self.pauses}")

    def moving_time(self, t_s: float) -> float:
        """Seconds spent moving between ``enter_s`` and ``t_s`` (pauses taken out)."""
        elapsed = max(0.0, t_s - self.enter_s)
        for at_s, for_s in self.pauses:
            start = max(at_s, self.enter_s)
            end = min(at_s + for_s, t_s)
            if end > start:
                elapsed -= end - start
        return elapsed

    def centre(self, t_s: float) -> tuple[float, float]:
        """Centre (px) at scene time ``t_s``, whether or not the actor is visible then."""
        moved = self.moving_time(t_s)
        return (
            self.start_xy[0] + self.velocity[0] * moved,
            self.start_xy[1] + self.velocity[1] * moved,
        )

    def is_moving(self, t_s: float) -> bool:
        """False while paused (or before it enters)."""
        if t_s < self.enter_s:
            return False
        return not any(at_s <= t_s < at_s + for_s for at_s, for_s in self.pauses)


@dataclass(frozen=True, slots=True)
class Box:
    """A visible actor's box in pixels, clipped to the frame."""

    label: str
    actor: int  # index into the scene's actors
    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def width(self) -> float:
        """x2 - x1."""
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        """y2 - y1."""
        return self.y2 - self.y1


@dataclass(frozen=True, slots=True)
class _Look:
    """How one actor is painted (drawn once per actor from the scene's seed)."""

    body: Colour
    second: Colour  # car: windows; person: trousers
    third: Colour  # car: wheels; person: skin
    variant: float  # car: cabin length; person: build


class SyntheticScene:
    """A fixed camera looking at a street; frames are rendered on demand for any time."""

    def __init__(
        self,
        *,
        width: int = 640,
        height: int = 360,
        seed: int = 0,
        actors: Sequence[Actor] = (),
        noise_std: float = 2.0,
        lighting: Sequence[tuple[float, float]] = (),
    ) -> None:
        if width < 16 or height < 16:
            raise ValueError(f"frame too small: {width}x{height}")
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        if any(gain < 0 for _, gain in lighting):
            raise ValueError(f"lighting gains must be >= 0, got {lighting}")
        self.width = width
        self.height = height
        self.seed = seed
        self.actors: tuple[Actor, ...] = tuple(actors)
        self.noise_std = noise_std
        self.lighting: tuple[tuple[float, float], ...] = tuple(sorted(lighting))
        self.background: Frame = _background(width, height, seed)
        self._looks = [
            _look(a.label, np.random.default_rng([seed, 1, i])) for i, a in enumerate(self.actors)
        ]

    # -- ground truth --------------------------------------------------------------------

    def _raw_box(self, index: int, t_s: float) -> tuple[float, float, float, float] | None:
        actor = self.actors[index]
        if t_s < actor.enter_s or (actor.exit_s is not None and t_s >= actor.exit_s):
            return None
        cx, cy = actor.centre(t_s)
        w, h = actor.size
        return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2

    def truth(self, t_s: float) -> list[Box]:
        """Boxes of the actors visible at ``t_s``, clipped to the frame, in actor order."""
        boxes: list[Box] = []
        for index, actor in enumerate(self.actors):
            raw = self._raw_box(index, t_s)
            if raw is None:
                continue
            x1, y1 = max(raw[0], 0.0), max(raw[1], 0.0)
            x2, y2 = min(raw[2], float(self.width)), min(raw[3], float(self.height))
            if x2 - x1 >= _MIN_VISIBLE_PX and y2 - y1 >= _MIN_VISIBLE_PX:
                boxes.append(Box(actor.label, index, x1, y1, x2, y2))
        return boxes

    def gain(self, t_s: float) -> float:
        """Lighting gain at ``t_s``: 1.0, then a linear ramp of ~1 s to each new gain."""
        level = 1.0
        for at_s, target in self.lighting:
            if t_s <= at_s:
                break
            level += (target - level) * min(1.0, (t_s - at_s) / _RAMP_S)
        return level

    # -- rendering -----------------------------------------------------------------------

    def render(self, t_s: float) -> Frame:
        """The frame at ``t_s``: (height, width, 3) uint8 BGR, deterministic for (seed, t_s)."""
        frame = self.background.copy()
        visible = [(i, box) for i in range(len(self.actors)) if (box := self._raw_box(i, t_s))]
        # Painter's order: whoever stands lower in the picture is nearer the camera.
        for index, box in sorted(visible, key=lambda item: (item[1][3], item[0])):
            actor = self.actors[index]
            if actor.label == "car":
                _draw_car(frame, box, self._looks[index], facing_right=actor.velocity[0] >= 0)
            else:
                stride = actor.moving_time(t_s) * math.hypot(*actor.velocity)
                _draw_person(frame, box, self._looks[index], stride_px=stride)
        out = frame.astype(np.float32)
        gain = self.gain(t_s)
        if gain != 1.0:
            out *= gain
        if self.noise_std > 0:
            rng = np.random.default_rng([self.seed, 2, _time_key(t_s)])
            out += rng.normal(0.0, self.noise_std, size=out.shape).astype(np.float32)
        return np.asarray(np.clip(out + 0.5, 0, 255), dtype=np.uint8)


def random_actors(
    rng: np.random.Generator, count: int, *, width: int, height: int, duration_s: float
) -> list[Actor]:
    """``count`` plausible actors for a ``width`` x ``height`` street over ``duration_s``.

    Cars drive along the road lanes, people walk along the pavement or cross the road;
    about half enter from a frame edge, the rest appear inside the frame; a quarter pause
    once. Sizes scale with the frame (cars ~40-120 px wide at 640x360).
    """
    scale = width / 640.0
    layout = _Layout(width, height)
    actors: list[Actor] = []
    for _ in range(count):
        enter_s = float(rng.uniform(0.0, max(duration_s * 0.8, 1e-3)))
        if rng.random() < 0.5:
            w = float(rng.uniform(40.0, 120.0)) * scale
            h = w * float(rng.uniform(0.38, 0.6))
            speed = float(rng.uniform(25.0, 140.0)) * scale
            cy = float(rng.uniform(layout.road_top + h * 0.3, height - h * 0.3))
            vy = float(rng.normal(0.0, 2.0)) * scale
            label = "car"
        else:
            h = float(rng.uniform(30.0, 95.0)) * height / 360.0
            w = h * float(rng.uniform(0.3, 0.42))
            speed = float(rng.uniform(10.0, 50.0)) * scale
            if rng.random() < 0.75:  # along the pavement, feet on it
                cy = float(rng.uniform(layout.pavement_top, layout.road_top)) - h / 2
                vy = float(rng.normal(0.0, 2.0)) * scale
            else:  # crossing, diagonally
                cy = float(rng.uniform(layout.pavement_top, height))
                vy = float(rng.uniform(-1.0, 1.0)) * speed
            label = "person"
        direction = 1.0 if rng.random() < 0.5 else -1.0
        vx = direction * math.sqrt(max(speed**2 - vy**2, (0.3 * speed) ** 2))
        if rng.random() < 0.5:  # enters from the side it walks away from
            cx = -w / 2 + 1 if direction > 0 else width + w / 2 - 1
        else:
            cx = float(rng.uniform(0.0, width))
        pauses: tuple[tuple[float, float], ...] = ()
        if rng.random() < 0.25:
            pauses = ((enter_s + float(rng.uniform(0.5, 5.0)), float(rng.uniform(1.0, 6.0))),)
        actors.append(Actor(label, enter_s, (cx, cy), (vx, vy), (w, h), pauses))
    return actors


# -- internals ---------------------------------------------------------------------------


def _time_key(t_s: float) -> int:
    """A non-negative integer for the noise seed; frames 1 us apart get distinct noise."""
    return round(t_s * 1e6) % (1 << 62)


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where the bands of the street are, as fractions of the frame."""

    width: int
    height: int

    @property
    def pavement_top(self) -> float:
        """The wall ends and the pavement begins."""
        return self.height * 0.30

    @property
    def road_top(self) -> float:
        """The kerb."""
        return self.height * 0.46


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> _F32:
    """Low-frequency noise in about [-1, 1]: a coarse random grid, resized smoothly."""
    grid = rng.normal(0.0, 1.0, size=(max(2, cells * height // width), cells))
    resized = cv2.resize(grid.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    return np.asarray(resized, dtype=np.float32)


def _background(width: int, height: int, seed: int) -> Frame:
    """The static scene for a seed: wall, pavement, kerb, road, lane marks, pole, manhole."""
    rng = np.random.default_rng([seed, 0])
    layout = _Layout(width, height)
    img = np.zeros((height, width, 3), np.float32)
    pav, road = int(layout.pavement_top), int(layout.road_top)
    wall = rng.uniform(60, 170, size=3)  # brick, hedge or concrete: any colour
    img[:pav] = wall
    img[pav:road] = rng.uniform(135, 175) + rng.uniform(-8, 8, size=3)
    img[road:] = rng.uniform(70, 110) + rng.uniform(-5, 5, size=3)
    # Texture: large blotches, a finer mottle and per-pixel grain, all fixed for the seed.
    img += (12 * _smooth_noise(rng, height, width, 8))[..., None]
    img += (6 * _smooth_noise(rng, height, width, 48))[..., None]
    img += rng.normal(0.0, 4.0, size=(height, width, 1)).astype(np.float32)
    frame = np.clip(img, 0, 255).astype(np.uint8)
    # Wall joints (horizontal lines) so the top band is not flat.
    joint = tuple(int(c) for c in np.clip(wall * 0.7, 0, 255))
    for y in range(int(rng.integers(8, 20)), pav, int(rng.integers(14, 26))):
        cv2.line(frame, (0, y), (width - 1, y), joint, 1)
    # Kerb: a light band with a dark edge under it.
    kerb_h = max(2, height // 60)
    cv2.rectangle(frame, (0, road - kerb_h), (width - 1, road), (200, 200, 198), -1)
    cv2.line(frame, (0, road + 1), (width - 1, road + 1), (45, 45, 45), 1)
    # Dashed lane mark through the middle of the road, and a solid edge line.
    mid = int((road + height) / 2)
    dash, gap = max(8, width // 16), max(6, width // 24)
    offset = int(rng.integers(0, dash + gap))
    for x in range(-offset, width, dash + gap):
        cv2.rectangle(frame, (x, mid - 1), (x + dash, mid + 2), (225, 225, 225), -1)
    edge_y = road + max(6, height // 24)
    cv2.line(frame, (0, edge_y), (width - 1, edge_y), (190, 210, 215), 2)
    # A pole on the pavement (tall and thin, not a person) and a manhole on the road.
    pole_x = int(rng.uniform(0.1, 0.9) * width)
    cv2.rectangle(frame, (pole_x, 0), (pole_x + max(2, width // 160), road - 2), (60, 60, 64), -1)
    centre = (int(rng.uniform(0.1, 0.9) * width), int(rng.uniform(mid + 10, height - 10)))
    axes = (max(6, width // 40), max(3, height // 90))
    cv2.ellipse(frame, centre, axes, 0, 0, 360, (55, 58, 60), -1, cv2.LINE_AA)
    return frame


def _colour(rng: np.random.Generator, low: int = 20, high: int = 235) -> Colour:
    b, g, r = (int(v) for v in rng.integers(low, high, size=3))
    return b, g, r


def _look(label: str, rng: np.random.Generator) -> _Look:
    if label == "car":
        return _Look(
            body=_colour(rng),
            second=_colour(rng, 15, 70),
            third=_colour(rng, 5, 35),
            variant=float(rng.uniform(0.45, 0.7)),
        )
    skin = (int(rng.integers(60, 150)), int(rng.integers(90, 180)), int(rng.integers(140, 230)))
    return _Look(
        body=_colour(rng),
        second=_colour(rng, 15, 160),
        third=skin,
        variant=float(rng.uniform(0.8, 1.0)),
    )


def _pt(x: float, y: float) -> tuple[int, int]:
    return round(x * _ONE), round(y * _ONE)


def _rect(frame: Frame, x1: float, y1: float, x2: float, y2: float, colour: Colour) -> None:
    cv2.rectangle(frame, _pt(x1, y1), _pt(x2, y2), colour, -1, cv2.LINE_AA, _SHIFT)


def _rounded(
    frame: Frame, x1: float, y1: float, x2: float, y2: float, radius: float, colour: Colour
) -> None:
    """A filled rectangle with rounded corners (two rectangles and four discs)."""
    r = max(0.0, min(radius, (x2 - x1) / 2, (y2 - y1) / 2))
    _rect(frame, x1 + r, y1, x2 - r, y2, colour)
    _rect(frame, x1, y1 + r, x2, y2 - r, colour)
    for cx, cy in ((x1 + r, y1 + r), (x2 - r, y1 + r), (x1 + r, y2 - r), (x2 - r, y2 - r)):
        cv2.circle(frame, _pt(cx, cy), round(r * _ONE), colour, -1, cv2.LINE_AA, _SHIFT)


def _draw_car(
    frame: Frame, box: tuple[float, float, float, float], look: _Look, *, facing_right: bool
) -> None:
    """Side view: a body, a cabin with dark windows (set back from the bonnet), two wheels."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    wheel_r = h * 0.2
    body_top, body_bottom = y1 + h * 0.42, y2 - wheel_r * 0.9
    cabin_w = w * look.variant
    # Facing right, the bonnet (the longer free end) is on the right.
    cabin_x1 = x1 + w * 0.08 if facing_right else x2 - w * 0.08 - cabin_w
    cabin_x2 = cabin_x1 + cabin_w
    _rounded(frame, cabin_x1, y1, cabin_x2, body_top + 2, h * 0.18, look.body)
    _rounded(frame, x1, body_top, x2, body_bottom, h * 0.14, look.body)
    pad = h * 0.08
    middle = (cabin_x1 + cabin_x2) / 2
    _rect(frame, cabin_x1 + pad, y1 + pad, middle - pad / 2, body_top, look.second)
    _rect(frame, middle + pad / 2, y1 + pad, cabin_x2 - pad, body_top, look.second)
    light = (200, 235, 250) if facing_right else (40, 40, 200)
    front = x2 - w * 0.04 if facing_right else x1
    _rect(frame, front, body_top + h * 0.08, front + w * 0.04, body_top + h * 0.16, light)
    for wx in (x1 + w * 0.22, x2 - w * 0.22):
        centre = _pt(wx, y2 - wheel_r)
        cv2.circle(frame, centre, int(wheel_r * _ONE), look.third, -1, cv2.LINE_AA, _SHIFT)
        hub = (150, 150, 150)
        cv2.circle(frame, centre, int(wheel_r * 0.4 * _ONE), hub, -1, cv2.LINE_AA, _SHIFT)


def _draw_person(
    frame: Frame, box: tuple[float, float, float, float], look: _Look, *, stride_px: float
) -> None:
    """Front/side view: head, torso with arms, two legs that swing while walking."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    cx = (x1 + x2) / 2
    head_r = min(h * 0.085, w * 0.32)
    head_cy = y1 + head_r
    cv2.circle(frame, _pt(cx, head_cy), int(head_r * _ONE), look.third, -1, cv2.LINE_AA, _SHIFT)
    torso_top, hip = y1 + head_r * 2.1, y1 + h * 0.55
    torso_half = w * 0.5 * look.variant
    _rounded(frame, cx - torso_half, torso_top, cx + torso_half, hip, w * 0.18, look.body)
    # Legs: a swing whose phase follows the distance walked (so a paused person stands).
    swing = math.sin(stride_px / max(h * 0.35, 1.0) * math.pi) * w * 0.25
    leg_w = max(1.0, w * 0.36)
    for sign in (-1.0, 1.0):
        foot_x = cx + sign * w * 0.16 + sign * swing
        top_x = cx + sign * w * 0.14
        pts = np.array(
            [
                _pt(top_x - leg_w / 2, hip - 1),
                _pt(top_x + leg_w / 2, hip - 1),
                _pt(min(max(foot_x + leg_w / 2, x1 + leg_w), x2), y2),
                _pt(max(min(foot_x - leg_w / 2, x2 - leg_w), x1), y2),
            ],
            dtype=np.int32,
        )
        cv2.fillConvexPoly(frame, pts, look.second, cv2.LINE_AA, _SHIFT)
