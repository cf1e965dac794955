"""Deployments: rollouts of a model version, each agent's progress, and desired states.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

_json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_ts = sa.DateTime(timezone=True)
_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("id", _id, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("pipeline", sa.String(64), nullable=False),
        sa.Column("target", _json, nullable=False),
        sa.Column("strategy", _json, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", _ts, nullable=False),
        sa.Column("updated_at", _ts, nullable=False),
    )
    op.create_index("ix_deployments_state", "deployments", ["state"])
    op.create_table(
        "deployment_agents",
        sa.Column("deployment_id", sa.BigInteger(), primary_key=True),
        sa.Column("agent_id", sa.String(64), primary_key=True),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("previous", _json, nullable=True),
        sa.Column("running_version", sa.String(64), nullable=True),
        sa.Column("updated_at", _ts, nullable=False),
    )
    op.create_table(
        "desired_states",
        sa.Column("agent_id", sa.String(64), primary_key=True),
        sa.Column("payload", _json, nullable=False),
        sa.Column("updated_at", _ts, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("desired_states")
    op.drop_table("deployment_agents")
    op.drop_index("ix_deployments_state", table_name="deployments")
    op.drop_table("deployments")
