"""Daily rollups of the summaries' signals (``signal_rollups`` added up by UTC day), backfilled
from the hourly ones.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cloud_api.tables import UtcDateTime

revision = "0011"
down_revision: str | None = "0010"
branch_labels: str | None = None
depends_on: str | None = None

VALUES = ["count", "sum", "min", "max"]
# Counts and sums saturate as ingest's do (numeric on PostgreSQL, total() on SQLite first).
BACKFILL = {
    "postgresql": """
INSERT INTO signal_rollups_daily (agent_id, pipeline, signal, day, count, sum, min, max)
SELECT agent_id, pipeline, signal, timezone('UTC', date_trunc('day', timezone('UTC', hour))),
       least(sum(count::numeric), 9223372036854775807)::bigint,
       greatest(least(sum(sum::numeric), 1.7976931348623157e308),
                -1.7976931348623157e308)::float8,
       min(min), max(max)
FROM signal_rollups GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
""",
    # The fixed-width naive UTC text UtcDateTime stores on SQLite, so keys equal ingest's.
    "sqlite": """
INSERT INTO signal_rollups_daily (agent_id, pipeline, signal, day, count, sum, min, max)
SELECT agent_id, pipeline, signal, strftime('%Y-%m-%d 00:00:00.000000', hour),
       CAST(min(total(count), 9223372036854775807) AS INTEGER),
       max(min(total(sum), 1.7976931348623157e308), -1.7976931348623157e308),
       min(min), max(max)
FROM signal_rollups GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
""",
}


def upgrade() -> None:
    op.create_table(
        "signal_rollups_daily",
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("pipeline", sa.String(64), nullable=False),
        sa.Column("signal", sa.String(64), nullable=False),
        sa.Column("day", UtcDateTime(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("sum", sa.Float(), nullable=False),
        sa.Column("min", sa.Float(), nullable=False),
        sa.Column("max", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("agent_id", "pipeline", "signal", "day", postgresql_include=VALUES),
    )
    op.create_index(
        "ix_signal_rollups_daily_signal_series",
        "signal_rollups_daily",
        ["signal", "agent_id", "pipeline", "day"],
        postgresql_include=VALUES,
    )
    op.create_index("ix_signal_rollups_daily_day", "signal_rollups_daily", ["day"])
    dialect = op.get_bind().dialect.name
    if dialect in BACKFILL:
        op.execute(BACKFILL[dialect])


def downgrade() -> None:
    op.drop_table("signal_rollups_daily")
