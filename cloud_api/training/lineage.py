"""A model version's lineage: the job that trained it, the dataset version it learnt from,
its parent version, its deployments and the versions trained from it.

An event names the model version that produced it (``model.name``, ``model.version``), so
an event leads here, and from here to its data. Plain rows; the route shapes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud_api.tables import DeploymentRow
from cloud_api.training.tables import DatasetVersionRow, TrainedVersionRow, TrainingJobRow


@dataclass(frozen=True)
class Lineage:
    """The rows that make one version's lineage (None where it was not trained here)."""

    trained: TrainedVersionRow | None
    job: TrainingJobRow | None
    dataset: DatasetVersionRow | None
    deployments: Sequence[DeploymentRow]
    children: list[str]


def lineage_of(session: Session, *, name: str, version: str) -> Lineage:
    """The lineage of ``name`` ``version`` (which the caller has found registered)."""
    trained = session.scalar(
        select(TrainedVersionRow).where(
            TrainedVersionRow.name == name, TrainedVersionRow.version == version
        )
    )
    job = dataset = None
    if trained is not None:
        job = session.get(TrainingJobRow, trained.job_id)
        dataset = session.get(DatasetVersionRow, trained.dataset_version_id)
    deployments = session.scalars(
        select(DeploymentRow)
        .where(DeploymentRow.model == name, DeploymentRow.version == version)
        .order_by(DeploymentRow.id)
    ).all()
    children = session.scalars(
        select(TrainedVersionRow.version)
        .where(TrainedVersionRow.name == name, TrainedVersionRow.parent_version == version)
        .order_by(TrainedVersionRow.id)
    ).all()
    return Lineage(trained, job, dataset, deployments, list(children))
