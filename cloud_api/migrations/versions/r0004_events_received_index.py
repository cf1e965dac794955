"""Index events in ingestion order: live streams poll "received after (received_at, id)".

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_index("ix_events_received_at_id", "events", ["received_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_events_received_at_id", table_name="events")
