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
from sqlalchemy import Subquery, and_, case, false, func, select
from sqlalchemy.orm import Session

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


def _selected(pipeline: str, selector: Selector) -> list[Any]:
    """The selector's conditions on a sample (pipeline, agents, time range)."""
    where: list[Any] = [SampleRow.pipeline == pipeline]
    if selector.agents is not None:
        where.append(SampleRow.agent_id.in_(selector.agents))
    if selector.since is not None:
        where.append(SampleRow.ts >= selector.since)
    if selector.until is not None:
        where.append(SampleRow.ts < selector.until)
    return where


def _trusted(pipeline: str, selector: Selector) -> Subquery:
    """Each selected sample's trusted label: by precedence (person, cloud, edge) among the
    selector's sources, and the latest of that source (a person may relabel); rank 1 is it."""
    precedence = case(
        {source: index for index, source in enumerate(PRECEDENCE)}, value=SampleLabelRow.source
    )
    rank = func.row_number().over(
        partition_by=SampleLabelRow.sample_id, order_by=(precedence, SampleLabelRow.id.desc())
    )
    selected = select(SampleRow.id).where(*_selected(pipeline, selector))
    return (
        select(SampleLabelRow.sample_id, SampleLabelRow.label, SampleLabelRow.source)
        .add_columns(rank.label("rank"))
        .where(
            SampleLabelRow.source.in_(selector.label_sources),
            SampleLabelRow.sample_id.in_(selected),
        )
        .subquery()
    )


def selected_samples(
    session: Session, *, pipeline: str, selector: Selector, kind: str
) -> list[SampleRow]:
    """The pipeline's samples of ``kind`` (``window``, ``image``) the selector picks (agents,
    time range, at most ``max_samples``), oldest first, whatever their labels. The kind is
    picked in SQL before the limit, so other kinds never crowd them out."""
    is_kind = SampleRow.meta["kind"].as_string() == kind
    query = select(SampleRow).where(*_selected(pipeline, selector), is_kind)
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
    """The dataset's items, oldest first, and why other selected samples were left out.

    Windows with a trusted (and selected) label are picked in SQL before ``max_samples``
    applies, so other samples never crowd them out; the window shape is checked here."""
    trusted = _trusted(pipeline, selector)
    label = trusted.c.label
    is_window = SampleRow.meta["kind"].as_string() == "window"
    query = (
        select(SampleRow.id, SampleRow.agent_id, SampleRow.sha256, SampleRow.meta["window"])
        .add_columns(label, trusted.c.source)
        .join(trusted, and_(trusted.c.sample_id == SampleRow.id, trusted.c.rank == 1))
        .where(*_selected(pipeline, selector), is_window)
    )
    if selector.labels is not None:
        query = query.where(label.in_(selector.labels))
    query = query.order_by(SampleRow.ts, SampleRow.id).limit(selector.max_samples)
    items: list[Item] = []
    skipped = _left_out(session, pipeline, selector, trusted, is_window)
    for sample_id, agent_id, sha256, window, found, source in session.execute(query):
        shape = tuple(window["shape"])
        if shape != window_shape:
            skipped[f"window shape {list(shape)} is not {list(window_shape)}"] += 1
            continue
        split = split_of(sample_id, test_share)
        items.append(Item(sample_id, agent_id, found, source, split, sha256))
    return items, skipped


def _left_out(
    session: Session, pipeline: str, selector: Selector, trusted: Subquery, is_window: Any
) -> Counter[str]:
    """How many selected samples are not windows, have no trusted label, or one that is not
    selected: one counting query."""
    label = trusted.c.label
    unselected = label.is_not(None) & (
        label.not_in(selector.labels) if selector.labels is not None else false()
    )
    counts = {
        "not a window": ~is_window,
        "no label from a trusted source": is_window & label.is_(None),
        "label not selected": is_window & unselected,
    }
    query = (
        select(*(func.count(case((when, 1))) for when in counts.values()))
        .select_from(SampleRow)
        .outerjoin(trusted, and_(trusted.c.sample_id == SampleRow.id, trusted.c.rank == 1))
        .where(*_selected(pipeline, selector))
    )
    row = session.execute(query).one()
    return Counter({reason: int(n) for reason, n in zip(counts, row, strict=True) if n})


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
