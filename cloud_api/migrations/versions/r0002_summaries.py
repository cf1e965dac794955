"""Pipeline summaries: what each pipeline read and sent per window (the bandwidth report).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

_json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_ts = sa.DateTime(timezone=True)
_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "summaries",
        sa.Column("id", _id, primary_key=True, autoincrement=True),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("pipeline", sa.String(64), nullable=False),
        sa.Column("window_start", _ts, nullable=False),
        sa.Column("window_end", _ts, nullable=False),
        sa.Column("samples_in", sa.BigInteger(), nullable=False),
        sa.Column("inferences", sa.BigInteger(), nullable=False),
        sa.Column("gated", sa.BigInteger(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("events_by_label", _json, nullable=False),
        sa.Column("signals", _json, nullable=False),
        sa.Column("raw_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sent_bytes", sa.BigInteger(), nullable=False),
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("model_sha256", sa.String(64), nullable=False),
        sa.Column("received_at", _ts, nullable=False),
        sa.UniqueConstraint("agent_id", "pipeline", "window_start", name="uq_summaries_window"),
    )
    op.create_index("ix_summaries_window_start", "summaries", ["window_start"])


def downgrade() -> None:
    op.drop_index("ix_summaries_window_start", table_name="summaries")
    op.drop_table("summaries")
