"""Camera fixtures: the same frames as a lossless video file and as a folder of PNGs.

A pipeline test reads the pair through ``OpenCvSource`` and ``ImageFolderSource`` and
expects the same events from both. FFV1 (lossless, in opencv-python-headless's FFmpeg) keeps
the frames bit-exact, so any difference is the sources' doing, not the codec's.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edge_agent.sources.sample import Sample
from edge_agent.sources.synthetic_scene import Actor, SyntheticScene

Frame = npt.NDArray[np.uint8]

VIDEO_NAME = "clip.avi"
FOLDER_NAME = "frames"
FPS = 10.0


def scene_frames(scene: SyntheticScene, *, fps: float, seconds: float) -> list[Frame]:
    """Frames ``0 .. seconds * fps - 1`` of ``scene`` at ``fps``."""
    return [scene.render(i / fps) for i in range(round(seconds * fps))]


def write_video(frames: Sequence[Frame], path: Path, *, fps: float) -> Path:
    """A lossless FFV1 .avi of ``frames`` (all the same size)."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"FFV1"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {path}: no FFV1 encoder in this OpenCV build")
    try:
        for frame in frames:
            writer.write(frame)
    finally:
        writer.release()
    return path


def write_image_folder(frames: Sequence[Frame], folder: Path) -> Path:
    """``frames`` as ``000000.png``, ``000001.png``, ... in ``folder`` (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(frames):
        if not cv2.imwrite(str(folder / f"{index:06d}.png"), frame):
            raise RuntimeError(f"cannot write {folder / f'{index:06d}.png'}")
    return folder


def write_fixture_pair(
    frames: Sequence[Frame], directory: Path, *, fps: float
) -> tuple[Path, Path]:
    """(video file, image folder) holding the same ``frames`` at ``fps``, in ``directory``."""
    video = write_video(frames, directory / VIDEO_NAME, fps=fps)
    folder = write_image_folder(frames, directory / FOLDER_NAME)
    return video, folder


def street(seconds: float = 4.0) -> list[Frame]:
    """A car crossing the synthetic street, ``seconds`` of it at ``FPS``."""
    car = Actor("car", 0.5, (-40.0, 260.0), (150.0, 0.0), (80.0, 40.0))
    return scene_frames(SyntheticScene(seed=9, actors=[car]), fps=FPS, seconds=seconds)


def take(source: Any, limit: int | None = None) -> list[Sample]:
    """The source's samples until it ends, or its first ``limit``."""
    stop = threading.Event()
    out: list[Sample] = []
    for sample in source.samples(stop):
        out.append(sample)
        if limit is not None and len(out) >= limit:
            stop.set()
    return out
