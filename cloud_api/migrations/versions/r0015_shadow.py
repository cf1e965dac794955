"""Shadow evaluation: the last shadow report of each agent of a shadow deployment.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cloud_api.tables import Json, UtcDateTime

revision = "0015"
down_revision: str | None = "0014"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "shadow_reports",
        sa.Column("deployment_id", sa.BigInteger(), primary_key=True),
        sa.Column("agent_id", sa.String(64), primary_key=True),
        sa.Column("report", Json, nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("shadow_reports")
