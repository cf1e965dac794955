"""The OpenCV camera source: a video file and an image folder of the same frames agree; fps
limits, loops; streams reconnect with backoff. Every camera config refuses what it cannot do."""

from __future__ import annotations

import functools
import http.server
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pytest
from pydantic import Field, TypeAdapter, ValidationError

from edge_agent.sources.backoff import Backoff
from edge_agent.sources.camera import OpenCvSource, OpenCvSourceConfig
from edge_agent.sources.image_folder import ImageFolderSource, ImageFolderSourceConfig
from edge_agent.sources.sample import Sample
from edge_agent.sources.synthetic_camera import SyntheticSceneSourceConfig
from tests.edge.vision_fixtures import FPS, street, take, write_fixture_pair, write_video

CameraConfig = Annotated[
    OpenCvSourceConfig | ImageFolderSourceConfig | SyntheticSceneSourceConfig,
    Field(discriminator="type"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_a_video_file_and_an_image_folder_of_the_same_frames_yield_the_same(
    tmp_path: Path,
) -> None:
    frames = street()
    video, folder = write_fixture_pair(frames, tmp_path, fps=FPS)
    from_video = take(OpenCvSource(OpenCvSourceConfig(type="opencv", path=video, speed=0)))
    from_folder = take(
        ImageFolderSource(ImageFolderSourceConfig(type="image_folder", path=folder, speed=0))
    )
    assert len(from_video) == len(from_folder) == len(frames) == 40
    for a, b, original in zip(from_video, from_folder, frames, strict=True):
        assert a.seq == b.seq
        assert a.data.dtype == np.uint8
        assert a.data.shape == (360, 640, 3)
        assert np.abs(a.data.astype(int) - b.data.astype(int)).max() <= 1
        assert np.array_equal(b.data, original)
    for samples in (from_video, from_folder):
        assert [s.seq for s in samples] == list(range(40))
        assert np.allclose(np.diff([s.ts for s in samples]), 0.1)


def test_fps_limit_keeps_every_third_frame_of_a_30_fps_file(tmp_path: Path) -> None:
    frames = street(1.0) * 3  # 30 frames
    video = write_video(frames, tmp_path / "fast.avi", fps=30.0)
    source = OpenCvSource(OpenCvSourceConfig(type="opencv", path=video, fps=10.0, speed=0))
    samples = take(source)
    assert [s.seq for s in samples] == list(range(10))
    for sample, original in zip(samples, frames[::3], strict=True):
        assert np.array_equal(sample.data, original)
    assert np.allclose(np.diff([s.ts for s in samples]), 0.1)
    assert source.period_s == pytest.approx(0.1)
    assert source.window == 640 * 360 * 3


def test_a_looping_file_goes_on_with_gap_free_numbers_and_rising_times(tmp_path: Path) -> None:
    frames = street(0.5)
    video = write_video(frames, tmp_path / "short.avi", fps=FPS)
    source = OpenCvSource(OpenCvSourceConfig(type="opencv", path=video, loop=True, speed=0))
    samples = take(source, limit=12)
    assert [s.seq for s in samples] == list(range(12))
    assert np.all(np.diff([s.ts for s in samples]) > 0)
    assert np.array_equal(samples[5].data, samples[0].data)


def test_a_missing_video_file_ends_the_source_with_one_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = OpenCvSource(OpenCvSourceConfig(type="opencv", path=tmp_path / "nope.avi"))
    with caplog.at_level(logging.ERROR, logger="edge_agent.sources.camera"):
        assert take(source) == []
    assert [r.levelname for r in caplog.records] == ["ERROR"]


@pytest.mark.timeout(60)
def test_a_stream_that_cannot_connect_retries_with_backoff_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"rtsp://viewer:secret@127.0.0.1:{free_port()}/live"
    source = OpenCvSource(
        OpenCvSourceConfig(
            type="opencv", url=url, reconnect_min_s=0.01, reconnect_max_s=0.05, open_timeout_s=2
        )
    )
    stop = threading.Event()
    got: list[Sample] = []
    with caplog.at_level(logging.INFO, logger="edge_agent.sources.camera"):
        worker = threading.Thread(target=lambda: got.extend(source.samples(stop)))
        worker.start()
        deadline = time.monotonic() + 30
        while source.failures < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()
        worker.join(timeout=10)
    assert not worker.is_alive()
    assert source.failures >= 5
    assert got == []
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1
    assert "cannot connect" in messages[0]
    assert "secret" not in messages[0]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.timeout(60)
def test_a_stream_that_comes_up_later_recovers_and_logs_the_recovery_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    frames = street(2.0)
    write_video(frames, tmp_path / "live.avi", fps=FPS)
    port = free_port()
    source = OpenCvSource(
        OpenCvSourceConfig(
            type="opencv",
            url=f"http://127.0.0.1:{port}/live.avi",
            reconnect_min_s=0.01,
            reconnect_max_s=0.05,
        )
    )
    stop = threading.Event()
    got: list[Sample] = []

    def consume() -> None:
        for sample in source.samples(stop):
            got.append(sample)
            if len(got) == 10:
                stop.set()

    server: http.server.ThreadingHTTPServer | None = None
    with caplog.at_level(logging.INFO, logger="edge_agent.sources.camera"):
        worker = threading.Thread(target=consume)
        worker.start()
        try:
            deadline = time.monotonic() + 30
            while source.failures < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            handler = functools.partial(_QuietHandler, directory=str(tmp_path))
            server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            worker.join(timeout=30)
        finally:
            stop.set()
            if server is not None:
                server.shutdown()
                server.server_close()
    assert not worker.is_alive()
    assert [s.seq for s in got] == list(range(10))
    assert all(np.array_equal(s.data, f) for s, f in zip(got, frames, strict=False))
    levels = [(r.levelname, r.getMessage().split(": ", 1)[1]) for r in caplog.records]
    assert levels == [
        ("WARNING", "cannot connect; retrying with backoff"),
        ("INFO", "stream is back"),
    ]


class FakeCapture:
    """A capture that yields ``n`` frames and then fails, or never opens (n is None)."""

    def __init__(self, n: int | None, first: int) -> None:
        self.n = n
        self.next = first

    def isOpened(self) -> bool:
        return self.n is not None

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.n is None or self.n == 0:
            return False, None
        self.n -= 1
        self.next += 1
        return True, np.full((4, 4, 3), self.next - 1, dtype=np.uint8)

    def get(self, prop_id: int) -> float:
        return 25.0

    def release(self) -> None:
        pass


def test_dropped_streams_reconnect_with_numbers_that_never_skip(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Refused, 3 frames then a drop, refused twice, 2 frames.
    captures = [(None, 0), (3, 10), (None, 0), (None, 0), (2, 20)]
    script: Iterator[FakeCapture] = iter(FakeCapture(n, first) for n, first in captures)
    config = OpenCvSourceConfig(
        type="opencv", url="rtsp://cam/1", reconnect_min_s=0.001, reconnect_max_s=0.002
    )
    source = OpenCvSource(config, opener=lambda _: next(script))
    with caplog.at_level(logging.INFO, logger="edge_agent.sources.camera"):
        samples = take(source, limit=5)
    assert [s.seq for s in samples] == [0, 1, 2, 3, 4]
    assert [int(s.data[0, 0, 0]) for s in samples] == [10, 11, 12, 20, 21]
    assert [r.getMessage() for r in caplog.records] == [
        "camera rtsp://cam/1: cannot connect; retrying with backoff",
        "camera rtsp://cam/1: stream is back",
        "camera rtsp://cam/1: stream dropped; retrying with backoff",
        "camera rtsp://cam/1: stream is back",
    ]
    assert source.failures == 4


def test_backoff_doubles_up_to_its_maximum_and_resets() -> None:
    backoff = Backoff(0.5, 5.0)
    assert [backoff.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    backoff.reset()
    assert backoff.next() == 0.5


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"type": "opencv"}, "exactly one of path, url, device"),
        ({"type": "opencv", "url": "rtsp://x", "device": 0}, "exactly one of path, url, device"),
        ({"type": "opencv", "url": "rtsp://x", "loop": True}, "loop applies to a video file"),
        ({"type": "opencv", "url": "rtsp://x", "fsp": 5}, "extra"),
        ({"type": "image_folder"}, "path"),
        ({"type": "synthetic_scene", "random_actors": 3}, "needs duration_s"),
        (
            {
                "type": "synthetic_scene",
                "actors": [{"label": "bus", "start_xy": [0, 0], "size": [1, 1]}],
            },
            "expected one of car, person",
        ),
        ({"type": "webcam"}, "union_tag_invalid|does not match any of the expected tags"),
    ],
)
def test_camera_configs_refuse_what_they_cannot_do(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TypeAdapter(CameraConfig).validate_python(data)
