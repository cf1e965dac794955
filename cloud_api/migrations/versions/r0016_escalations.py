"""Escalations and their answers, and the cloud model of each pipeline.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cloud_api.tables import Json, UtcDateTime

revision = "0016"
down_revision: str | None = "0015"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "cloud_models",
        sa.Column("pipeline", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("normal_label", sa.String(128), nullable=True),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(64), nullable=False),
    )
    op.create_table(
        "escalations",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("pipeline", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=True),
        sa.Column("sample_id", sa.String(36), nullable=True),
        sa.Column("edge_model", sa.String(130), nullable=False),
        sa.Column("edge_label", sa.String(128), nullable=False),
        sa.Column("edge_score", sa.Float(), nullable=False),
        sa.Column("cloud_model", sa.String(130), nullable=True),
        sa.Column("cloud_label", sa.String(128), nullable=True),
        sa.Column("cloud_score", sa.Float(), nullable=True),
        sa.Column("agree", sa.Boolean(), nullable=True),
        sa.Column("ts", UtcDateTime(), nullable=False),
        sa.Column("answered_at", UtcDateTime(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("result", Json, nullable=False),
    )
    op.create_index("ix_escalations_sample_id", "escalations", ["sample_id"])
    op.create_index("ix_escalations_answered_id", "escalations", ["answered_at", "id"])
    op.create_index(
        "ix_escalations_agent_pipeline", "escalations", ["agent_id", "pipeline", "answered_at"]
    )


def downgrade() -> None:
    op.drop_table("escalations")
    op.drop_table("cloud_models")
