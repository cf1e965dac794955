"""Hourly rollups of the summaries' signals (count, sum, min, max per agent, pipeline, signal
and hour), backfilled from stored summaries.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cloud_api.tables import UtcDateTime

revision = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None

VALUES = ["count", "sum", "min", "max"]
# Counts and sums of a backfill saturate as ingest's do; both databases add them up in a type
# that does not overflow first (numeric on PostgreSQL, total() on SQLite): the largest
# 64-bit integer and the largest float are the literals below.
BACKFILL = {
    "postgresql": """
INSERT INTO signal_rollups (agent_id, pipeline, signal, hour, count, sum, min, max)
SELECT agent_id, pipeline, s.key,
       timezone('UTC', date_trunc('hour', timezone('UTC', window_start))),
       least(sum((s.value->>'count')::numeric), 9223372036854775807)::bigint,
       greatest(least(sum((s.value->>'mean')::numeric * (s.value->>'count')::numeric),
                      1.7976931348623157e308), -1.7976931348623157e308)::float8,
       min((s.value->>'min')::float8), max((s.value->>'max')::float8)
FROM summaries, jsonb_each(summaries.signals) AS s
GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
""",
    # The fixed-width naive UTC text UtcDateTime stores on SQLite, so keys equal ingest's.
    "sqlite": """
INSERT INTO signal_rollups (agent_id, pipeline, signal, hour, count, sum, min, max)
SELECT agent_id, pipeline, s.key, strftime('%Y-%m-%d %H:00:00.000000', window_start),
       CAST(min(total(json_extract(s.value, '$.count')), 9223372036854775807) AS INTEGER),
       max(min(coalesce(total(json_extract(s.value, '$.mean')
                              * json_extract(s.value, '$.count')), 0.0),
               1.7976931348623157e308), -1.7976931348623157e308),
       min(json_extract(s.value, '$.min')), max(json_extract(s.value, '$.max'))
FROM summaries, json_each(summaries.signals) AS s
GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
""",
}


def upgrade() -> None:
    op.create_table(
        "signal_rollups",
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("pipeline", sa.String(64), nullable=False),
        sa.Column("signal", sa.String(64), nullable=False),
        sa.Column("hour", UtcDateTime(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("sum", sa.Float(), nullable=False),
        sa.Column("min", sa.Float(), nullable=False),
        sa.Column("max", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(
            "agent_id", "pipeline", "signal", "hour", postgresql_include=VALUES
        ),
    )
    op.create_index(
        "ix_signal_rollups_signal_series",
        "signal_rollups",
        ["signal", "agent_id", "pipeline", "hour"],
        postgresql_include=VALUES,
    )
    op.create_index("ix_signal_rollups_hour", "signal_rollups", ["hour"])
    dialect = op.get_bind().dialect.name
    if dialect in BACKFILL:
        op.execute(BACKFILL[dialect])


def downgrade() -> None:
    op.drop_table("signal_rollups")
