"""Samples (kept edge inputs; blobs in the artifact store), their labels with provenance, and
people's feedback on events.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cloud_api.tables import Json, UtcDateTime

revision = "0012"
down_revision: str | None = "0011"
branch_labels: str | None = None
depends_on: str | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "samples",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("pipeline", sa.String(64), nullable=False),
        sa.Column("ts", UtcDateTime(), nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("meta", Json, nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_samples_ts_id", "samples", ["ts", "id"])
    op.create_index("ix_samples_agent_ts", "samples", ["agent_id", "ts", "id"])
    op.create_index("ix_samples_event", "samples", ["event_id"])
    op.create_table(
        "sample_labels",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("sample_id", sa.String(36), nullable=False),
        sa.Column("label", sa.String(128), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("author", sa.String(64), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=True),
        sa.Column("model", sa.String(130), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_sample_labels_sample_id", "sample_labels", ["sample_id"])
    op.create_table(
        "event_feedback",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("label", sa.String(128), nullable=False),
        sa.Column("author", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_event_feedback_event_id", "event_feedback", ["event_id"])


def downgrade() -> None:
    op.drop_table("event_feedback")
    op.drop_table("sample_labels")
    op.drop_table("samples")
