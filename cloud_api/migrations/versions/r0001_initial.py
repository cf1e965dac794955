"""Initial schema: events, agents, dead_letters.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_ts = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("pipeline", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("label", sa.String(128), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("ts", _ts, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("model_name", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("model_sha256", sa.String(64), nullable=False),
        sa.Column("attributes", _json, nullable=False),
        sa.Column("received_at", _ts, nullable=False),
    )
    op.create_index("ix_events_ts_id", "events", ["ts", "id"])
    op.create_index("ix_events_agent_ts", "events", ["agent_id", "ts", "id"])
    op.create_index("ix_events_pipeline_ts", "events", ["pipeline", "ts", "id"])
    op.create_index("ix_events_label_ts", "events", ["label", "ts", "id"])
    op.create_table(
        "agents",
        sa.Column("agent_id", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(256), nullable=False),
        sa.Column("last_status", _json, nullable=False),
        sa.Column("last_seen", _ts, nullable=True),
        sa.Column("heartbeat_s", sa.Float(), nullable=False),
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("topic", sa.String(512), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("payload_size", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("received_at", _ts, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("dead_letters")
    op.drop_table("agents")
    op.drop_index("ix_events_label_ts", table_name="events")
    op.drop_index("ix_events_pipeline_ts", table_name="events")
    op.drop_index("ix_events_agent_ts", table_name="events")
    op.drop_index("ix_events_ts_id", table_name="events")
    op.drop_table("events")
