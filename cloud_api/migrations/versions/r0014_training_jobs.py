"""Training: jobs claimed by workers, the dataset versions they freeze, trained versions' lineage.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cloud_api.tables import BigId, Json, UtcDateTime

revision = "0014"
down_revision: str | None = "0013"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "training_jobs",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("pipeline", sa.String(64), nullable=False),
        sa.Column("trainer", sa.String(64), nullable=False),
        sa.Column("base_model", sa.String(64), nullable=False),
        sa.Column("base_version", sa.String(64), nullable=False),
        sa.Column("selector", Json, nullable=False),
        sa.Column("options", Json, nullable=False),
        sa.Column("gate", Json, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("logs", Json, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("claim_token", sa.String(32), nullable=True),
        sa.Column("worker", sa.String(128), nullable=True),
        sa.Column("lease_until", UtcDateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("dataset_version_id", sa.BigInteger(), nullable=True),
        sa.Column("result_version", sa.String(64), nullable=True),
        sa.Column("report", Json, nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=True),
        sa.Column("finished_at", UtcDateTime(), nullable=True),
    )
    op.create_index("ix_training_jobs_state_id", "training_jobs", ["state", "id"])
    op.create_table(
        "dataset_versions",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("pipeline", sa.String(64), nullable=False),
        sa.Column("label_sources", Json, nullable=False),
        sa.Column("manifest", Json, nullable=False),
        sa.Column("counts", Json, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_dataset_versions_job", "dataset_versions", ["job_id"])
    op.create_table(
        "trained_versions",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("parent_version", sa.String(64), nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("dataset_version_id", sa.BigInteger(), nullable=False),
        sa.Column("report", Json, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.UniqueConstraint("name", "version", name="uq_trained_versions_name_version"),
    )


def downgrade() -> None:
    op.drop_table("trained_versions")
    op.drop_index("ix_dataset_versions_job", "dataset_versions")
    op.drop_table("dataset_versions")
    op.drop_index("ix_training_jobs_state_id", "training_jobs")
    op.drop_table("training_jobs")
