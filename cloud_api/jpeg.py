"""JPEG blobs from agents (sample uploads, image escalations, training frames), read safely.

A decoder allocates what a JPEG's header claims, and a few hundred crafted bytes can claim
gigapixels. So the size is read from the header first (Pillow's lazy open reads the markers
up to the frame header, not the scan data), refused over the contract's ``MAX_PIXELS``, and
only then is the image decoded (OpenCV), and must be the size its header said.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from shared.errors import ContractError
from shared.samples import MAX_PIXELS


def jpeg_size(data: bytes) -> tuple[int, int]:
    """A JPEG's width and height read from its header, nothing decoded; ContractError when
    it is not a JPEG or claims more than the contract's ``MAX_PIXELS``."""
    if not data.startswith(b"\xff\xd8"):
        raise ContractError("the input is not a JPEG (no JPEG start marker)")
    try:
        # Lazy: reads the markers up to the frame header (SOF), not the scan data.
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as header:
            width, height = header.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ContractError(
            f"the JPEG's header claims more than {MAX_PIXELS} pixels; refused undecoded"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ContractError(f"the input is not a JPEG that decodes: {exc}") from None
    if width * height > MAX_PIXELS:
        raise ContractError(
            f"the JPEG's header claims {width}x{height} pixels, more than {MAX_PIXELS}; "
            "refused undecoded"
        )
    return width, height


def decode_jpeg(data: bytes) -> npt.NDArray[np.uint8]:
    """A JPEG as a BGR image; ContractError when it does not decode, or its header claims
    more pixels than the contract allows (checked before decoding)."""
    width, height = jpeg_size(data)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.ndim != 3 or image.size == 0:
        raise ContractError("the input is not a JPEG that decodes")
    if image.shape[:2] != (height, width):
        raise ContractError(
            f"the JPEG decodes to {image.shape[1]}x{image.shape[0]}, "
            f"not the {width}x{height} of its header"
        )
    return np.asarray(image, dtype=np.uint8)
