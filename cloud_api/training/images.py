"""A detector job's dataset: collected camera frames, each labelled with the boxes the cloud
detector found in it (pseudo-labels), split and frozen like any dataset.

A frame's labels come from the answer to the escalation of that very frame (the escalation
carries the sample's id, and the edge sends the same JPEG in both, so the answer's boxes are
in the sample's pixels); its latest answer wins. Each boxed object keeps its provenance in
the frozen manifest: the cloud model and version that answered, the escalation, the score.
A box scored ``min_score`` or more is learnt and must be found on the held-out split; a
weaker one (the cloud was unsure too) is neither learnt nor counted as a false alarm.

Left out, and counted in the dataset's ``skipped``: samples that are not images; crops (a
crop shows a part of a frame, and the edge detector reads whole frames); frames the cloud
never answered. The label source is ``cloud``: only the cloud model gives boxes (a person's
verdict on an image labels the event, not the objects in the frame).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud_api.jpeg import decode_jpeg
from cloud_api.registry import ArtifactStore
from cloud_api.tables import EscalationRow, SampleRow
from cloud_api.training import datasets
from cloud_api.training.spec import Selector
from models.scenes import LabelledFrame
from shared.errors import ContractError

SOURCE = "cloud"
BACKGROUND = "background"
"""A frame's label when the cloud saw no object in it."""
UNSURE_VISIBLE = 0.0
"""The visible share given to an unsure box: training ignores it, evaluation does not
require it (``models.detector_net.MIN_TRAIN_VISIBLE``, ``models.detector.MIN_VISIBLE``)."""


@dataclass(frozen=True, slots=True)
class PseudoBox:
    """One object the cloud detector found: its class, score and box in frame pixels."""

    label: str
    score: float
    box: tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class ImageItem(datasets.Item):
    """A frame of the dataset with the cloud's boxes and where they came from.

    ``label`` names the classes it holds confidently (``car+person``, or ``background``)."""

    model: str
    """The cloud model version that answered (``name version``)."""
    escalation: str
    boxes: tuple[PseudoBox, ...]
    min_score: float

    def as_dict(self) -> dict[str, Any]:
        """The manifest's entry, with each box's provenance."""
        return {
            **datasets.Item.as_dict(self),
            "model": self.model,
            "escalation": self.escalation,
            "min_score": self.min_score,
            "boxes": [
                {"label": b.label, "score": round(b.score, 4), "box": [round(v, 2) for v in b.box]}
                for b in self.boxes
            ],
        }


def _answers(session: Session, samples: list[SampleRow]) -> dict[str, EscalationRow]:
    """The latest answered escalation of each sample (by its own agent)."""
    owners = {row.id: row.agent_id for row in samples}
    latest: dict[str, EscalationRow] = {}
    for start in range(0, len(samples), 500):
        ids = [row.id for row in samples[start : start + 500]]
        query = (
            select(EscalationRow)
            .where(EscalationRow.sample_id.in_(ids), EscalationRow.outcome == "answered")
            .order_by(EscalationRow.answered_at, EscalationRow.id)
        )
        for row in session.scalars(query):
            if row.sample_id is not None and owners.get(row.sample_id) == row.agent_id:
                latest[row.sample_id] = row
    return latest


def _boxes(answer: EscalationRow, classes: list[str]) -> tuple[PseudoBox, ...]:
    """The answer's detections; ContractError for a class the detector does not know."""
    boxes = []
    for found in answer.result.get("detections", []):
        if found["label"] not in classes:
            raise ContractError(
                f"escalation {answer.id}: the cloud model {answer.cloud_model} found a "
                f"{found['label']!r}, which is not among the detector's labels {classes}"
            )
        x1, y1, x2, y2 = (float(v) for v in found["box"])
        boxes.append(PseudoBox(found["label"], float(found["score"]), (x1, y1, x2, y2)))
    return tuple(boxes)


def _label(boxes: tuple[PseudoBox, ...], min_score: float) -> str:
    sure = sorted({b.label for b in boxes if b.score >= min_score})
    return "+".join(sure) if sure else BACKGROUND


def select_frames(
    session: Session,
    *,
    pipeline: str,
    selector: Selector,
    classes: list[str],
    test_share: float,
    min_score: float,
) -> tuple[list[ImageItem], Counter[str]]:
    """The dataset's frames, oldest first, and why other selected samples were left out.

    ``selector.labels`` keeps the frames holding one of those classes (or ``background``).
    """
    if SOURCE not in selector.label_sources:
        raise ContractError(
            f"a detector learns from the cloud model's boxes: selector.label_sources "
            f"{list(selector.label_sources)} must include {SOURCE!r}"
        )
    samples = datasets.selected_samples(session, pipeline=pipeline, selector=selector, kind="image")
    answers = _answers(session, samples)
    items: list[ImageItem] = []
    skipped: Counter[str] = Counter()
    for row in samples:
        image = row.meta.get("image")
        if image is None:
            skipped["not an image"] += 1
        elif image["region"] != "frame":
            skipped["a crop, not a whole frame"] += 1
        elif (answer := answers.get(row.id)) is None:
            skipped["no answer from the cloud model"] += 1
        else:
            boxes = _boxes(answer, classes)
            label = _label(boxes, min_score)
            if selector.labels is not None and not set(label.split("+")) & set(selector.labels):
                skipped[f"label {label!r} not selected"] += 1
                continue
            split = datasets.split_of(row.id, test_share)
            items.append(
                ImageItem(
                    row.id, row.agent_id, label, SOURCE, split, row.sha256,
                    model=answer.cloud_model or "", escalation=answer.id, boxes=boxes,
                    min_score=min_score,
                )
            )  # fmt: skip
    return items, skipped


def check(items: list[ImageItem], skipped: Counter[str]) -> None:
    """ContractError for a dataset a detector cannot learn from: no frame, or no confident
    object in its training split; the reasons for what was left out are named."""
    why = "; ".join(f"{count} {reason}" for reason, count in skipped.most_common(3))
    left_out = f" (left out: {why})" if why else ""
    if not items:
        raise ContractError(
            f"the dataset is empty: no frame of the selector has a cloud answer{left_out}"
        )
    train = [item for item in items if item.split == "train"]
    if all(item.label == BACKGROUND for item in train):
        raise ContractError(
            f"the training split of {len(train)} frames holds no object the cloud model found "
            f"with a score of {items[0].min_score} or more{left_out}"
        )


def load_frames(
    store: ArtifactStore, items: list[ImageItem], classes: list[str]
) -> list[LabelledFrame]:
    """The items' frames (BGR, as the edge decodes them) with their pseudo-labels as truth;
    ContractError for a blob that is gone, changed or no JPEG."""
    frames = []
    for item in items:
        image = decode_jpeg(datasets.blob_of(store, item))
        sure = np.array([b.score >= item.min_score for b in item.boxes], bool)
        frames.append(
            LabelledFrame(
                image=image,
                boxes=np.array([b.box for b in item.boxes], np.float32).reshape(-1, 4),
                labels=np.array([classes.index(b.label) for b in item.boxes], np.int64),
                visible=np.where(sure, 1.0, UNSURE_VISIBLE).astype(np.float32),
            )
        )
    return frames
