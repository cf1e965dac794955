"""Object thumbnails: the crop of a frame that shows a tracked object at its best score.

The lifecycle (``edge_agent.pipelines.tracking.lifecycle``) decides which frame is worth
keeping and names it; this module only makes the crop, with a margin so the object's
surroundings show, shrunk so a thumbnail stays a few kilobytes whatever the camera's
resolution. A camera pipeline keeps its thumbnails as samples in the agent's spool (same
quota, uploaded like the rest) after its privacy policy has blurred what it must
(``VisionPipeline``); ``save_thumbnail`` writes one to a file.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from shared.errors import StorageError

BoxXYXY = tuple[float, float, float, float]


def crop_region(
    shape: tuple[int, ...], box: BoxXYXY, *, margin: float = 0.15
) -> tuple[int, int, int, int]:
    """``box`` (x1, y1, x2, y2, frame pixels) widened by ``margin`` of its size and clipped to
    a frame of ``shape``: (left, top, right, bottom) in whole pixels."""
    height, width = shape[:2]
    x1, y1, x2, y2 = box
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    left, top = max(0, int(x1 - mx)), max(0, int(y1 - my))
    right, bottom = min(width, int(np.ceil(x2 + mx))), min(height, int(np.ceil(y2 + my)))
    if right <= left or bottom <= top:
        raise ValueError(f"box {box} does not overlap the {width}x{height} frame")
    return left, top, right, bottom


def crop(
    frame: npt.NDArray[np.uint8], box: BoxXYXY, *, margin: float = 0.15, max_side: int = 256
) -> npt.NDArray[np.uint8]:
    """The ``crop_region`` of ``box``, shrunk so its longer side is at most ``max_side``."""
    left, top, right, bottom = crop_region(frame.shape, box, margin=margin)
    out = frame[top:bottom, left:right]
    scale = max_side / max(out.shape[0], out.shape[1])
    if scale < 1.0:
        size = (max(1, round(out.shape[1] * scale)), max(1, round(out.shape[0] * scale)))
        out = np.asarray(cv2.resize(out, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
    return np.ascontiguousarray(out)


def thumbnail_jpeg(
    frame: npt.NDArray[np.uint8], box: BoxXYXY, *, quality: int = 85
) -> tuple[bytes, tuple[int, int, int, int], tuple[int, int]]:
    """The object's crop as JPEG bytes, the crop's region in the frame (left, top, right,
    bottom) and the JPEG's width and height. ValueError if it cannot be encoded."""
    region = crop_region(frame.shape, box)
    image = crop(frame, box)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"cannot encode the thumbnail of box {box} as JPEG")
    return bytes(encoded.tobytes()), region, (image.shape[1], image.shape[0])


def save_thumbnail(
    frame: npt.NDArray[np.uint8],
    box: BoxXYXY,
    path: Path,
    *,
    margin: float = 0.15,
    max_side: int = 256,
    quality: int = 85,
) -> Path:
    """Write the object's crop as a JPEG at ``path`` (parents created); StorageError on failure."""
    image = crop(frame, box, margin=margin, max_side=max_side)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"cannot create thumbnail folder {path.parent}: {exc.strerror}"
        ) from None
    if not cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, quality]):
        raise StorageError(f"cannot write thumbnail {path}")
    return path
