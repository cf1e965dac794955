"""Agents' remote configurations: the overlay last set for each agent, published retained.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cloud_api.tables import Json, UtcDateTime

revision = "0013"
down_revision: str | None = "0012"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "agent_configs",
        sa.Column("agent_id", sa.String(64), primary_key=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("overlay", Json, nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("agent_configs")
