"""sha256, the one way both sides name an artifact's content."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20
"""Files are read 1 MiB at a time: model files can be hundreds of megabytes."""


def sha256_bytes(data: bytes | bytearray) -> str:
    """The hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in chunks. Raises OSError as ``open`` does."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
