"""REST shapes of training (``/api/v1/training-jobs``, a version's ``lineage``).

Kept apart from ``cloud_api/schemas.py`` as the deployments' are; the request is ``JobSpec``
(``cloud_api/training/spec.py``), which the worker reads back too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from cloud_api.training.spec import Gate, JobState, Selector


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class TrainingJobOut(_Out):
    """A job as asked for, and where it stands."""

    id: int
    pipeline: str
    trainer: str
    base_model: str
    base_version: str
    version: str | None
    selector: Selector
    options: dict[str, Any]
    gate: Gate
    state: JobState
    progress: float
    reason: str
    logs: list[str]
    created_by: str
    worker: str | None
    attempts: int
    dataset_version_id: int | None
    result_version: str | None
    report: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class DatasetVersionOut(_Out):
    """A frozen dataset: its digest, what it holds, and whose labels it trusted."""

    id: int
    job_id: int
    pipeline: str
    label_sources: list[str]
    counts: dict[str, Any]
    sha256: str
    created_at: datetime


class LineageDeployment(_Out):
    """A deployment of the version."""

    id: int
    pipeline: str
    state: str
    reason: str
    created_at: datetime


class LineageOut(BaseModel):
    """Where a model version came from and where it went.

    ``job``, ``dataset`` and ``report`` are null for a version that was uploaded, not trained
    here; ``children`` are versions trained from this one.
    """

    name: str
    version: str
    sha256: str
    parent_version: str | None
    job: TrainingJobOut | None
    dataset: DatasetVersionOut | None
    report: dict[str, Any] | None
    deployments: list[LineageDeployment]
    children: list[str]
