"""A job's dataset: the samples its selector picks, each with one trusted label, split into
train and held-out, frozen as a version, and read back as arrays from the artifact store.

The split is decided by each sample's id (a hash), not by chance: the same sample is on the
same side in every version, so a held-out window never trains a later candidate. The
manifest (id, label, label source, split, blob sha256) is written as canonical JSON and its
sha256 names the version's content.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud_api.queries.samples import labels_of
from cloud_api.registry import ArtifactStore
from cloud_api.samples import blob_key
from cloud_api.tables import SampleLabelRow, SampleRow
from cloud_api.training.spec import PRECEDENCE, Selector
from cloud_api.training.tables import DatasetVersionRow
from shared.errors import ContractError
from shared.messages import utcnow

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
Split = Literal["train", "test"]


@dataclass(frozen=True, slots=True)
class Item:
    """One sample of a dataset, with the label it is trained and measured on."""

    sample_id: str
    agent_id: str
    label: str
    source: str
    split: Split
    sha256: str

    def as_dict(self) -> dict[str, str]:
        """The manifest's entry."""
        return {
            "sample": self.sample_id,
            "agent": self.agent_id,
            "label": self.label,
            "source": self.source,
            "split": self.split,
            "sha256": self.sha256,
        }


def split_of(sample_id: str, test_share: float) -> Split:
    """Held out or not, by a hash of the id: the same answer in every dataset version."""
    bucket = int.from_bytes(hashlib.sha256(sample_id.encode()).digest()[:4], "big") / 2**32
    return "test" if bucket < test_share else "train"


def trusted_label(labels: list[SampleLabelRow], sources: list[str]) -> tuple[str, str] | None:
    """(label, source) by precedence (person, cloud, edge) among ``sources``; the latest
    label of that source wins (a person may relabel). None if no trusted source labelled it."""
    for source in PRECEDENCE:
        if source in sources:
            mine = [row for row in labels if row.source == source]
            if mine:
                return mine[-1].label, source
    return None


def selected_samples(session: Session, *, pipeline: str, selector: Selector) -> list[SampleRow]:
    """The pipeline's samples the selector picks (agents, time range, at most
    ``max_samples``), oldest first, whatever their kind or labels."""
    query = select(SampleRow).where(SampleRow.pipeline == pipeline)
    if selector.agents is not None:
        query = query.where(SampleRow.agent_id.in_(selector.agents))
    if selector.since is not None:
        query = query.where(SampleRow.ts >= selector.since)
    if selector.until is not None:
        query = query.where(SampleRow.ts < selector.until)
    rows = session.scalars(query.order_by(SampleRow.ts, SampleRow.id).limit(selector.max_samples))
    return list(rows.all())


def select_items(
    session: Session,
    *,
    pipeline: str,
    selector: Selector,
    window_shape: tuple[int, ...],
    test_share: float,
) -> tuple[list[Item], Counter[str]]:
    """The dataset's items, oldest first, and why other selected samples were left out."""
    samples = selected_samples(session, pipeline=pipeline, selector=selector)
    labels = labels_of(session, [row.id for row in samples])
    items: list[Item] = []
    skipped: Counter[str] = Counter()
    for row in samples:
        if row.meta.get("kind") != "window":
            skipped["not a window"] += 1
            continue
        shape = tuple(row.meta["window"]["shape"])
        if shape != window_shape:
            skipped[f"window shape {list(shape)} is not {list(window_shape)}"] += 1
            continue
        found = trusted_label(labels.get(row.id, []), list(selector.label_sources))
        if found is None:
            skipped["no label from a trusted source"] += 1
            continue
        if selector.labels is not None and found[0] not in selector.labels:
            skipped[f"label {found[0]!r} not selected"] += 1
            continue
        split = split_of(row.id, test_share)
        items.append(Item(row.id, row.agent_id, found[0], found[1], split, row.sha256))
    return items, skipped


def freeze(
    session: Session, *, job_id: int, pipeline: str, selector: Selector, items: Sequence[Item],
    skipped: Counter[str],
) -> DatasetVersionRow:  # fmt: skip
    """Record the dataset as a version (flushed, not committed); its id is then known."""
    manifest = [item.as_dict() for item in items]
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    counts: dict[str, Any] = {
        "samples": len(items),
        "train": sum(item.split == "train" for item in items),
        "test": sum(item.split == "test" for item in items),
        "labels": dict(Counter(item.label for item in items)),
        "skipped": dict(skipped),
    }
    row = DatasetVersionRow(
        job_id=job_id,
        pipeline=pipeline,
        label_sources=list(selector.label_sources),
        manifest=manifest,
        counts=counts,
        sha256=hashlib.sha256(canonical).hexdigest(),
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return row


def blob_of(store: ArtifactStore, item: Item) -> bytes:
    """The item's blob as frozen; ContractError for a blob that is gone or changed."""
    try:
        data = store.get(blob_key(item.agent_id, item.sample_id))
    except FileNotFoundError:
        raise ContractError(f"sample {item.sample_id}'s blob is gone from the store") from None
    if hashlib.sha256(data).hexdigest() != item.sha256:
        raise ContractError(f"sample {item.sample_id}'s blob does not match its sha256")
    return data


def load_windows(
    store: ArtifactStore, items: list[Item], index_of: Callable[[str], int]
) -> tuple[F32, I64]:
    """The items' windows ``[N, ...]`` and their labels' indices (``index_of``);
    ContractError for a blob that is gone or changed."""
    arrays: list[F32] = []
    for item in items:
        data = blob_of(store, item)
        arrays.append(np.load(io.BytesIO(data), allow_pickle=False).astype(np.float32))
    if not arrays:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64)
    indices = np.asarray([index_of(item.label) for item in items], dtype=np.int64)
    return np.stack(arrays), indices
