"""Camera sources: frames from OpenCV (files, RTSP/HTTP streams, devices), image folders and
the synthetic street scene, as numbered, timestamped ``Sample``s of BGR uint8 frames.

Every source numbers the frames it yields from 0 without gaps (frames it drops to keep to
``fps`` are never numbered) and stamps each with its capture time: the wall clock at the
read for live streams, the start time plus the media time for files, folders and the
synthetic scene (so a recording replays with the same spacing however fast it is read).

A live stream that drops is reopened with exponential backoff, logged once when it fails
and once when it recovers, never once per attempt. A video file ends the source at its end
unless ``loop`` is set.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Literal, Protocol, cast

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import (
    AfterValidator,
    Field,
    model_validator,
)

from edge_agent.config_types import FilePath, StrictConfig
from edge_agent.sources.sample import Sample, simulated_clock
from edge_agent.sources.synthetic_scene import CLASSES, Actor, SyntheticScene, random_actors
from shared.errors import ConfigError

log = logging.getLogger(__name__)

Frame = npt.NDArray[np.uint8]
Point = tuple[float, float]

_FILE_FPS_FALLBACK = 25.0  # when a container does not state its frame rate
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def frame_sample(seq: int, ts: float, frame: Frame) -> Sample:
    """A ``Sample`` carrying a frame (uint8, height x width x 3, BGR)."""
    return Sample(seq, ts, frame)


# -- OpenCV --------------------------------------------------------------------------------


class OpenCvSourceConfig(StrictConfig):
    """A video file, a network stream (RTSP, HTTP MJPEG, ...) or a local camera device."""

    type: Literal["opencv"]
    path: FilePath | None = Field(default=None, description="a video file")
    url: str | None = Field(default=None, description="rtsp://, http(s)://: reconnects")
    device: int | None = Field(default=None, ge=0, description="a camera index (/dev/videoN)")
    fps: float | None = Field(default=None, gt=0, description="at most this rate; None: all")
    speed: float = Field(
        default=1.0, ge=0, description="files only: 1.0 = the file's own rate, 0 = no waiting"
    )
    loop: bool = Field(default=False, description="files only: start again at the end")
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    open_timeout_s: float = Field(default=10.0, gt=0)
    read_timeout_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _one_input(self) -> OpenCvSourceConfig:
        given = [k for k in ("path", "url", "device") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of path, url, device (got {given or 'none'})")
        if self.loop and self.path is None:
            raise ValueError("loop applies to a video file (path) only")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        return self


class Capture(Protocol):
    """The part of ``cv2.VideoCapture`` a source uses (tests pass their own)."""

    def isOpened(self) -> bool: ...  # noqa: N802 (OpenCV's name)

    def read(self) -> tuple[bool, Frame | None]: ...

    def get(self, prop_id: int) -> float: ...

    def release(self) -> None: ...


def open_capture(config: OpenCvSourceConfig) -> Capture:
    """A ``cv2.VideoCapture`` for the config's input, with open and read timeouts."""
    if config.device is not None:
        return cast(Capture, cv2.VideoCapture(config.device))
    target = str(config.path) if config.path is not None else cast(str, config.url)
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        int(config.open_timeout_s * 1000),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        int(config.read_timeout_s * 1000),
    ]
    return cast(Capture, cv2.VideoCapture(target, cv2.CAP_FFMPEG, params))


class Backoff:
    """Exponential delays between reconnection attempts: min, 2 min, 4 min, ... max."""

    def __init__(self, minimum: float, maximum: float) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self._next = minimum

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self._next = self.minimum


class _RateLimit:
    """Keeps frames at most every ``1/fps`` seconds of their own clock (drops the rest).

    A frame is kept when it is no more than half a source frame early, so decimating 30 fps
    to 10 fps keeps exactly every third frame instead of drifting.
    """

    def __init__(self, fps: float | None, slack_s: float) -> None:
        self._period = 1.0 / fps if fps else 0.0
        self._slack = slack_s
        self._due: float | None = None

    def keep(self, t_s: float) -> bool:
        if self._period == 0.0:
            return True
        if self._due is not None and t_s + self._slack < self._due:
            return False
        due = (self._due if self._due is not None else t_s) + self._period
        self._due = max(due, t_s)  # after a stall, resume at the current time, no burst
        return True


class OpenCvSource:
    """Frames through ``cv2.VideoCapture``: files end (or loop), streams reconnect."""

    def __init__(
        self,
        config: OpenCvSourceConfig,
        *,
        opener: Callable[[OpenCvSourceConfig], Capture] = open_capture,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._opener = opener
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self._native_fps = 0.0
        self._shape: tuple[int, int] | None = None
        self.failures = 0
        """Failed opens and dropped streams since the start (for status and tests)."""

    @property
    def is_file(self) -> bool:
        return self._config.path is not None

    @property
    def period_s(self) -> float:
        """The time between two yielded frames (nominal: a live camera's rate can vary)."""
        if self._config.fps is not None:
            return 1.0 / self._config.fps
        return 1.0 / (self._native_fps or _FILE_FPS_FALLBACK)

    @property
    def window(self) -> int:
        """Values per frame (H * W * 3) once a frame was read; 0 before."""
        return 0 if self._shape is None else self._shape[0] * self._shape[1] * 3

    def samples(self, stop: threading.Event) -> Iterator[Sample]:
        backoff = Backoff(self._config.reconnect_min_s, self._config.reconnect_max_s)
        limit: _RateLimit | None = None  # one for the whole run: loops and reconnects too
        seq = 0
        offset_s = 0.0  # media time of earlier loops of a file
        t0 = self._wall_clock()
        m0 = self._monotonic()
        down = False
        while not stop.is_set():
            capture = self._opener(self._config)
            if not capture.isOpened():
                capture.release()
                if self.is_file:
                    log.error("camera %s: cannot open the video file", self._describe())
                    return
                down = self._failed(down, "cannot connect")
                if stop.wait(backoff.next()):
                    return
                continue
            if down:
                log.info("camera %s: stream is back", self._describe())
                down = False
            backoff.reset()
            self._native_fps = capture.get(cv2.CAP_PROP_FPS) or _FILE_FPS_FALLBACK
            if limit is None:
                limit = _RateLimit(self._config.fps, 0.5 / self._native_fps)
            read = 0
            for frame, media_s in self._frames(capture, stop):
                read += 1
                t_s = offset_s + media_s
                if not limit.keep(t_s if self.is_file else self._monotonic()):
                    continue
                if self.is_file:
                    if not self._pace(stop, m0, t_s):
                        break
                    ts = t0 + t_s
                else:
                    ts = self._wall_clock()
                self._shape = (frame.shape[0], frame.shape[1])
                yield frame_sample(seq, ts, frame)
                seq += 1
            capture.release()
            if stop.is_set():
                return
            if self.is_file:
                if not self._config.loop or read == 0:
                    return
                offset_s += read / self._native_fps
                continue
            down = self._failed(down, "stream dropped")
            if stop.wait(backoff.next()):
                return

    def _frames(self, capture: Capture, stop: threading.Event) -> Iterator[tuple[Frame, float]]:
        """(frame, media seconds) until the capture fails or ends."""
        index = 0
        while not stop.is_set():
            ok, frame = capture.read()
            if not ok or frame is None:
                return
            yield frame, index / self._native_fps
            index += 1

    def _pace(self, stop: threading.Event, m0: float, t_s: float) -> bool:
        """Wait until a file's frame is due at ``speed``; False when stopped meanwhile."""
        if self._config.speed <= 0:
            return True
        delay = m0 + t_s / self._config.speed - self._monotonic()
        return not (delay > 0 and stop.wait(delay))

    def _failed(self, down: bool, why: str) -> bool:
        self.failures += 1
        if not down:
            log.warning("camera %s: %s; retrying with backoff", self._describe(), why)
        return True

    def _describe(self) -> str:
        c = self._config
        if c.url is not None:
            return _redact(c.url)
        return str(c.path) if c.path is not None else f"device {c.device}"


def _redact(url: str) -> str:
    """A URL without its password (camera URLs often carry credentials)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    userinfo, _, host = rest.partition("@")
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


# -- image folder --------------------------------------------------------------------------


class ImageFolderSourceConfig(StrictConfig):
    """Image files of a folder in name order, as frames at ``fps``."""

    type: Literal["image_folder"]
    path: FilePath
    fps: float = Field(default=10.0, gt=0)
    speed: float = Field(default=1.0, ge=0, description="1.0 = real time, 0 = no waiting")
    loop: bool = False


class ImageFolderSource:
    """Frames from image files (sorted by name); unreadable files are skipped and logged."""

    def __init__(
        self,
        config: ImageFolderSourceConfig,
        *,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self._shape: tuple[int, int] | None = None

    @property
    def period_s(self) -> float:
        return 1.0 / self._config.fps

    @property
    def window(self) -> int:
        """Values per frame (H * W * 3) of the first image."""
        if self._shape is None:
            files = self.files()
            first = _read_image(files[0]) if files else None
            if first is not None:
                self._shape = (first.shape[0], first.shape[1])
        return 0 if self._shape is None else self._shape[0] * self._shape[1] * 3

    def files(self) -> list[Path]:
        """The folder's images in the order they are played."""
        folder = self._config.path
        if not folder.is_dir():
            raise ConfigError(f"{folder}: not a folder of images")
        return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)

    def samples(self, stop: threading.Event) -> Iterator[Sample]:
        files = self.files()
        if not files:
            log.warning("image folder %s: no images", self._config.path)
            return
        period = self.period_s
        t0 = self._wall_clock()
        m0 = self._monotonic()
        seq = 0
        bad: set[Path] = set()
        while not stop.is_set():
            for path in files:
                if path in bad:
                    continue
                t_s = seq * period
                if self._config.speed > 0:
                    delay = m0 + t_s / self._config.speed - self._monotonic()
                    if delay > 0 and stop.wait(delay):
                        return
                if stop.is_set():
                    return
                frame = _read_image(path)
                if frame is None:
                    bad.add(path)  # logged once, skipped on later loops too
                    log.warning("image folder: cannot read %s; skipping it", path)
                    continue
                self._shape = (frame.shape[0], frame.shape[1])
                yield frame_sample(seq, t0 + t_s, frame)
                seq += 1
            if not self._config.loop or len(bad) == len(files):
                return


def _read_image(path: Path) -> Frame | None:
    """A BGR uint8 image, or None when the file is not a readable image."""
    return cast("Frame | None", cv2.imread(str(path), cv2.IMREAD_COLOR))


# -- synthetic scene -----------------------------------------------------------------------


def _known_label(value: str) -> str:
    if value not in CLASSES:
        raise ValueError(f"expected one of {', '.join(CLASSES)}")
    return value


class ActorConfig(StrictConfig):
    """One object crossing the synthetic scene (see ``synthetic_scene.Actor``)."""

    label: Annotated[str, AfterValidator(_known_label)]
    enter_s: float = Field(default=0.0, ge=0)
    start_xy: Point
    velocity: Point = (0.0, 0.0)
    size: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]]
    pauses: list[tuple[float, Annotated[float, Field(ge=0)]]] = Field(
        default_factory=list, description="(at_s, for_s): stands still"
    )
    exit_s: float | None = None

    def actor(self) -> Actor:
        return Actor(
            self.label,
            self.enter_s,
            self.start_xy,
            self.velocity,
            self.size,
            tuple(self.pauses),
            self.exit_s,
        )


class LightingChangeConfig(StrictConfig):
    """From ``at_s`` the scene's brightness ramps (about 1 s) to ``gain`` times the normal."""

    at_s: float = Field(ge=0)
    gain: float = Field(ge=0)


class SyntheticSceneSourceConfig(StrictConfig):
    """A simulated fixed street camera with scripted (or random) cars and people."""

    type: Literal["synthetic_scene"]
    width: int = Field(default=640, ge=16, le=4096)
    height: int = Field(default=360, ge=16, le=4096)
    fps: float = Field(default=10.0, gt=0)
    duration_s: float | None = Field(default=None, gt=0)
    speed: float = Field(default=1.0, ge=0, description="1.0 = real time, 0 = no waiting")
    seed: int = 0
    noise_std: float = Field(default=2.0, ge=0)
    actors: list[ActorConfig] = Field(default_factory=list)
    random_actors: int = Field(
        default=0, ge=0, description="this many more actors, drawn from the seed"
    )
    lighting: list[LightingChangeConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _random_needs_duration(self) -> SyntheticSceneSourceConfig:
        if self.random_actors and self.duration_s is None:
            raise ValueError("random_actors needs duration_s (they are spread over it)")
        return self


def build_scene(config: SyntheticSceneSourceConfig) -> SyntheticScene:
    """The scene a config describes (its scripted actors first, then the random ones)."""
    actors: list[Actor] = [a.actor() for a in config.actors]
    if config.random_actors:
        rng = np.random.default_rng([config.seed, 99])
        actors += random_actors(
            rng,
            config.random_actors,
            width=config.width,
            height=config.height,
            duration_s=cast(float, config.duration_s),
        )
    return SyntheticScene(
        width=config.width,
        height=config.height,
        seed=config.seed,
        actors=actors,
        noise_std=config.noise_std,
        lighting=[(c.at_s, c.gain) for c in config.lighting],
    )


class SyntheticSceneSource:
    """Frames of ``SyntheticScene`` at ``fps``; ``scene`` gives the ground truth."""

    def __init__(
        self,
        config: SyntheticSceneSourceConfig,
        *,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self.scene = build_scene(config)
        self._wall_clock = wall_clock
        self._monotonic = monotonic

    @property
    def period_s(self) -> float:
        return 1.0 / self._config.fps

    @property
    def window(self) -> int:
        return self._config.width * self._config.height * 3

    def scene_time(self, seq: int) -> float:
        """Scene seconds of frame ``seq`` (for ``scene.truth``)."""
        return seq * self.period_s

    def samples(self, stop: threading.Event) -> Iterator[Sample]:
        t0 = self._wall_clock()
        clock = simulated_clock(
            self.period_s,
            stop,
            speed=self._config.speed,
            duration_s=self._config.duration_s,
            monotonic=self._monotonic,
        )
        for seq, t_s in clock:
            yield frame_sample(seq, t0 + t_s, self.scene.render(t_s))


CAMERA_SOURCES: dict[str, Callable[..., object]] = {
    "opencv": OpenCvSource,
    "image_folder": ImageFolderSource,
    "synthetic_scene": SyntheticSceneSource,
}
"""Entries for ``edge_agent.sources.registry.SOURCES`` (config ``type`` -> class)."""
