"""The image folder source: the image files of a folder in name order, as frames at ``fps``.

Frames are numbered from 0 without gaps (an unreadable file is skipped, logged once, and
never numbered) and stamped with the start time plus ``seq / fps``, however fast they are
read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal, cast

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import Field

from edge_agent.config_types import FilePath, StrictConfig
from edge_agent.sources.sample import Sample
from shared.errors import ConfigError

log = logging.getLogger(__name__)

Frame = npt.NDArray[np.uint8]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


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
                yield Sample(seq, t0 + t_s, frame)
                seq += 1
            if not self._config.loop or len(bad) == len(files):
                return


def _read_image(path: Path) -> Frame | None:
    """A BGR uint8 image, or None when the file is not a readable image."""
    return cast("Frame | None", cv2.imread(str(path), cv2.IMREAD_COLOR))
