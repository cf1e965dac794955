"""Samples in the cloud: a blob checked by decoding it, kept in the artifact store, and its
metadata in SQL with the edge's label; an upload sent again stores nothing twice.

The blob is copied to a temp file while it is counted and hashed (never held in memory
whole), then decoded: a window must be a ``.npy`` of exactly the declared shape and dtype, an
image a JPEG that decodes to the declared size. Same id and same bytes is the same sample
(the first answer again); same id and other bytes is a conflict. A refusal keeps nothing.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloud_api.escalation.store import sample_labels as escalation_labels
from cloud_api.jpeg import decode_jpeg, jpeg_size
from cloud_api.queries.samples import feedback_of, get_sample, hold_labels, person_label
from cloud_api.registry import CHUNK, ArtifactStore, spooled_upload
from cloud_api.tables import SampleLabelRow, SampleRow
from shared.errors import ConflictError, ContractError
from shared.messages import utcnow
from shared.samples import SampleMeta

log = logging.getLogger(__name__)


def blob_key(agent_id: str, sample_id: str) -> str:
    """Where a sample's blob is kept in the artifact store."""
    return f"samples/{agent_id}/{sample_id}"


@dataclass(frozen=True)
class Stored:
    """A stored sample, and whether this upload created it (False: it was there already)."""

    row: SampleRow
    created: bool


def check_window(meta: SampleMeta, path: Path) -> None:
    """ContractError unless ``path`` is a ``.npy`` of the declared shape and dtype."""
    assert meta.window is not None
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ContractError(f"the window blob is not a .npy array: {exc}") from None
    if not isinstance(array, np.ndarray):
        raise ContractError("the window blob is not a single .npy array")
    declared = tuple(meta.window.shape)
    if array.shape != declared or array.dtype != np.dtype(meta.window.dtype):
        raise ContractError(
            f"the window blob is {array.dtype} {list(array.shape)}, but its metadata declares "
            f"{meta.window.dtype} {list(declared)}"
        )


def check_image(meta: SampleMeta, path: Path) -> None:
    """ContractError unless ``path`` is a JPEG that decodes to the declared width and height
    (its header read first: nothing is decoded that claims another size, or too many pixels)."""
    assert meta.image is not None
    data = path.read_bytes()
    declared = (meta.image.width, meta.image.height)
    if (found := jpeg_size(data)) != declared:
        raise ContractError(
            f"the image blob's JPEG header says {found[0]}x{found[1]}, but its metadata "
            f"declares {declared[0]}x{declared[1]}"
        )
    decode_jpeg(data)


CHECKS: dict[str, Callable[[SampleMeta, Path], None]] = {
    "window": check_window,
    "image": check_image,
}


def _digest(path: Path) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def store_sample(
    session: Session,
    *,
    store: ArtifactStore,
    meta: SampleMeta,
    source: BinaryIO,
    tmp_dir: Path,
    max_bytes: int,
) -> Stored:
    """Check, keep and record one sample; the stored sample if it was there already.

    Raises TooLargeError (over ``max_bytes``), ContractError (the size or sha256 differ from
    the metadata, or the blob does not decode as declared) or ConflictError (the id is stored
    with other bytes).
    """
    with spooled_upload(source, tmp_dir=tmp_dir, max_bytes=max_bytes) as path:
        size, sha256 = _digest(path)
        if (size, sha256) != (meta.size, meta.sha256):
            raise ContractError(
                f"the blob has {size} bytes and sha256 {sha256}; its metadata says "
                f"{meta.size} bytes and sha256 {meta.sha256}"
            )
        existing = get_sample(session, meta.id)
        if existing is not None:
            return Stored(_same(existing, meta), created=False)
        CHECKS[meta.kind](meta, path)
        labels = _labels(session, meta)  # first: it takes the labels' locks, before writes
        row = _row(meta)
        session.add(row)
        session.add_all(labels)
        key = blob_key(meta.agent_id, meta.id)
        try:
            session.flush()  # the primary key picks one winner among concurrent uploads
            store.put(key, path)
            session.commit()
        except IntegrityError:
            session.rollback()
            winner = get_sample(session, meta.id)
            if winner is None:
                raise
            return Stored(_same(winner, meta), created=False)
        except BaseException:
            session.rollback()
            store.delete(key)
            raise
    log.debug("stored sample %s of %s/%s (%s)", meta.id, meta.agent_id, meta.pipeline, meta.reason)
    return Stored(row, created=True)


def _same(existing: SampleRow, meta: SampleMeta) -> SampleRow:
    if existing.sha256 != meta.sha256 or existing.agent_id != meta.agent_id:
        raise ConflictError(
            f"sample {meta.id} is stored already with other content (sha256 {existing.sha256})"
        )
    return existing


def _row(meta: SampleMeta) -> SampleRow:
    return SampleRow(
        id=meta.id,
        agent_id=meta.agent_id,
        pipeline=meta.pipeline,
        ts=meta.ts,
        reason=meta.reason,
        event_id=meta.event_id,
        sha256=meta.sha256,
        meta=meta.model_dump(mode="json", by_alias=True),
        received_at=utcnow(),
    )


def _labels(session: Session, meta: SampleMeta) -> list[SampleLabelRow]:
    """The edge model's label, and people's verdicts on the sample's event given before it
    arrived (a verdict given later labels it then)."""
    hold_labels(session, sample_ids=[meta.id], event_id=meta.event_id)  # see its docstring
    now = utcnow()
    labels = [
        SampleLabelRow(
            sample_id=meta.id,
            label=meta.label,
            source="edge",
            author=meta.agent_id,
            verdict=None,
            model=f"{meta.model.name} {meta.model.version}",
            created_at=now,
        )
    ]
    labels += escalation_labels(session, meta.id, meta.agent_id)  # escalated before it came
    if meta.event_id is not None:
        labels += [
            person_label(meta.id, fb) for fb in feedback_of(session, meta.event_id, meta.agent_id)
        ]
    return labels
