"""Agents get labels (set at enrollment): deployments select agents by them.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cloud_api.tables import Json

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("labels", Json, nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("labels")
