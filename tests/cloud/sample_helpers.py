"""Sample blobs and their metadata, built as an agent builds them, for cloud tests."""

from __future__ import annotations

import hashlib
import io
from typing import Any

import cv2
import numpy as np
from fastapi.testclient import TestClient

from shared.messages import encode, new_event_id, utcnow
from shared.samples import ImageInfo, PrivacyPolicy, SampleMeta, WindowInfo
from tests.cloud.helpers import MODEL


def npy_bytes(array: np.ndarray[Any, Any]) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def window_sample(
    agent_id: str,
    *,
    shape: tuple[int, ...] = (256,),
    declared: tuple[int, ...] | None = None,
    seed: int = 0,
    **changes: Any,
) -> tuple[SampleMeta, bytes]:
    """A float32 window and metadata that declares ``declared`` (default: its own shape)."""
    blob = npy_bytes(np.random.default_rng(seed).normal(size=shape).astype(np.float32))
    values: dict[str, Any] = {
        "id": new_event_id(),
        "agent_id": agent_id,
        "pipeline": "spindle-vibration",
        "ts": utcnow(),
        "reason": "random",
        "kind": "window",
        "size": len(blob),
        "sha256": hashlib.sha256(blob).hexdigest(),
        "model": MODEL,
        "label": "normal",
        "score": 0.1,
        "window": WindowInfo(shape=list(declared or shape), sample_rate_hz=12800.0),
        "privacy": PrivacyPolicy(),
    }
    values.update(changes)
    return SampleMeta.model_validate(values), blob


def image_sample(
    agent_id: str, blob: bytes | None = None, *, width: int = 64, height: int = 48
) -> tuple[SampleMeta, bytes]:
    """A JPEG (or ``blob`` as given) under a ``frames`` policy."""
    if blob is None:
        image = np.full((height, width, 3), 90, dtype=np.uint8)
        ok, encoded = cv2.imencode(".jpg", image)
        assert ok
        blob = encoded.tobytes()
    meta = SampleMeta(
        id=new_event_id(),
        agent_id=agent_id,
        pipeline="yard-camera",
        ts=utcnow(),
        reason="event",
        kind="image",
        size=len(blob),
        sha256=hashlib.sha256(blob).hexdigest(),
        model=MODEL,
        label="person",
        score=0.8,
        image=ImageInfo(width=width, height=height, region="frame"),
        privacy=PrivacyPolicy(images="frames"),
    )
    return meta, blob


def upload(client: TestClient, meta: SampleMeta, blob: bytes) -> Any:
    return client.post(
        "/api/v1/samples",
        data={"meta": encode(meta).decode()},
        files={"blob": ("blob", blob, meta.content_type)},
    )
