"""Thumbnails: a small JPEG of an object's box with a margin, bounded in size."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge_agent.pipelines.thumbnails import save_thumbnail


def test_save_thumbnail_writes_a_small_jpeg_of_the_box_with_a_margin(tmp_path: Path) -> None:
    frame = np.zeros((360, 640, 3), dtype=np.uint8)
    frame[100:200, 300:400] = (0, 0, 255)
    path = save_thumbnail(frame, (300.0, 100.0, 400.0, 200.0), tmp_path / "cam" / "7" / "12.jpg")
    image = cv2.imread(str(path))
    assert image is not None
    assert image.shape == (130, 130, 3)  # 100 px box + 15 % on each side
    assert image[65, 65, 2] > 200  # the red object in the middle
    assert image[2, 2].max() < 30  # the margin shows the surroundings
    big = np.zeros((2000, 3000, 3), dtype=np.uint8)
    small = save_thumbnail(big, (0.0, 0.0, 3000.0, 2000.0), tmp_path / "big.jpg", max_side=256)
    reread = cv2.imread(str(small))
    assert reread is not None
    assert max(reread.shape[:2]) == 256
