"""The image folder source: unreadable files are skipped (logged once), the folder loops."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from edge_agent.sources.image_folder import ImageFolderSource, ImageFolderSourceConfig
from tests.edge.vision_fixtures import FPS, street, take, write_fixture_pair


def test_image_folder_skips_unreadable_files_and_loops(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    frames = street(0.3)
    _, folder = write_fixture_pair(frames, tmp_path, fps=FPS)
    (folder / "000001b.png").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("ignored", encoding="utf-8")
    config = ImageFolderSourceConfig(type="image_folder", path=folder, speed=0, loop=True)
    with caplog.at_level(logging.WARNING, logger="edge_agent.sources.image_folder"):
        samples = take(ImageFolderSource(config), limit=7)
    assert [s.seq for s in samples] == list(range(7))
    expected = [*frames, *frames, frames[0]]
    assert all(np.array_equal(s.data, f) for s, f in zip(samples, expected, strict=True))
    assert len(caplog.records) == 1
    assert "000001b.png" in caplog.records[0].getMessage()
