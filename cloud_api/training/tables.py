"""SQL tables of training: jobs, the dataset versions they freeze, and trained versions' lineage.

On the same ``Base`` as ``cloud_api/tables.py`` (the migrations' environment imports this
module too), kept apart as the rollups are: one noun, training's rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Float, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cloud_api.tables import Base, BigId, Json, UtcDateTime


class TrainingJobRow(Base):
    """One training job: what to train from what, and where it stands.

    ``state``: queued -> running -> succeeded | failed | rejected (the gate was not met) |
    cancelled. A worker that claims a job writes a fresh ``claim_token`` and a ``lease_until``
    it keeps renewing; every later write of that worker is conditional on the token, so a
    worker whose lease expired (and whose job was re-queued) changes nothing.
    """

    __tablename__ = "training_jobs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    pipeline: Mapped[str] = mapped_column(String(64))
    trainer: Mapped[str] = mapped_column(String(64))
    base_model: Mapped[str] = mapped_column(String(64))
    base_version: Mapped[str] = mapped_column(String(64))
    selector: Mapped[dict[str, Any]] = mapped_column(Json)
    options: Mapped[dict[str, Any]] = mapped_column(Json)
    gate: Mapped[dict[str, Any]] = mapped_column(Json)
    state: Mapped[str] = mapped_column(String(16))
    progress: Mapped[float] = mapped_column(Float)
    logs: Mapped[list[str]] = mapped_column(Json)
    reason: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(64))
    claim_token: Mapped[str | None] = mapped_column(String(32), nullable=True)
    worker: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer)
    dataset_version_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    result_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    report: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)
    """The evaluation report (also kept with a registered version)."""
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)

    __table_args__ = (
        # Workers look for the oldest queued job, and for running jobs whose lease expired.
        Index("ix_training_jobs_state_id", "state", "id"),
    )


class DatasetVersionRow(Base):
    """A dataset frozen by a job: which samples with which labels, split how.

    ``manifest`` maps each sample id to its label and split; ``sha256`` is the digest of the
    manifest's canonical JSON, so two versions with the same content have the same digest.
    """

    __tablename__ = "dataset_versions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(BigInteger)
    pipeline: Mapped[str] = mapped_column(String(64))
    label_sources: Mapped[list[str]] = mapped_column(Json)
    manifest: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    counts: Mapped[dict[str, Any]] = mapped_column(Json)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (Index("ix_dataset_versions_job", "job_id"),)


class TrainedVersionRow(Base):
    """Where a trained model version came from, and the evaluation that let it in.

    Written in the same transaction as the version's registry row: a version either has its
    lineage and report, or does not exist.
    """

    __tablename__ = "trained_versions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    parent_version: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[int] = mapped_column(BigInteger)
    dataset_version_id: Mapped[int] = mapped_column(BigInteger)
    report: Mapped[dict[str, Any]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (UniqueConstraint("name", "version", name="uq_trained_versions_name_version"),)


LOG_LINES = 200
"""A job keeps its last this many log lines."""
LOG_LINE_CHARS = 500
