"""The OpenCV camera source: frames of video files, RTSP/HTTP streams and camera devices, as
numbered, timestamped ``Sample``s of BGR uint8 frames. (Image folders are
``edge_agent.sources.image_folder``, the synthetic street scene is
``edge_agent.sources.synthetic_camera``.)

Like every camera source it numbers the frames it yields from 0 without gaps (frames it
drops to keep to ``fps`` are never numbered) and stamps each with its capture time: the wall
clock at the read for live streams, the start time plus the media time for files (so a
recording replays with the same spacing however fast it is read).

A live stream that drops is reopened with exponential backoff, logged once when it fails
and once when it recovers, never once per attempt. A video file ends the source at its end
unless ``loop`` is set.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Literal, Protocol, cast

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import Field, model_validator

from edge_agent.config_types import FilePath, StrictConfig
from edge_agent.sources.backoff import Backoff
from edge_agent.sources.sample import Sample

log = logging.getLogger(__name__)

Frame = npt.NDArray[np.uint8]

_FILE_FPS_FALLBACK = 25.0  # when a container does not state its frame rate


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
                yield Sample(seq, ts, frame)
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
