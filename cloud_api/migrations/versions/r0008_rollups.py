"""Hourly rollups of events (count, sum, min, max of the score) per series and in total,
backfilled from stored events.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cloud_api.tables import UtcDateTime

revision = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None

SERIES = "agent_id, pipeline, label, kind, model_version"
HOUR = {
    "postgresql": "timezone('UTC', date_trunc('hour', timezone('UTC', ts)))",
    # The fixed-width naive UTC text UtcDateTime stores on SQLite, so keys equal ingest's.
    "sqlite": "strftime('%Y-%m-%d %H:00:00.000000', ts)",
}


def upgrade() -> None:
    op.create_table(
        "event_rollups_hourly",
        sa.Column("bucket", UtcDateTime(), nullable=False),
        sa.Column("agent_id", sa.String(64), nullable=False),
        sa.Column("pipeline", sa.String(64), nullable=False),
        sa.Column("label", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("score_sum", sa.Float(), nullable=False),
        sa.Column("score_min", sa.Float(), nullable=False),
        sa.Column("score_max", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(
            "bucket",
            "agent_id",
            "pipeline",
            "label",
            "kind",
            "model_version",
            postgresql_include=["events", "score_sum", "score_min", "score_max"],
        ),
    )
    op.create_table(
        "event_rollups_hourly_total",
        sa.Column("bucket", UtcDateTime(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("score_sum", sa.Float(), nullable=False),
        sa.Column("score_min", sa.Float(), nullable=False),
        sa.Column("score_max", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(
            "bucket", postgresql_include=["events", "score_sum", "score_min", "score_max"]
        ),
    )
    hour = HOUR[op.get_bind().dialect.name]
    for table, series in (("event_rollups_hourly", SERIES), ("event_rollups_hourly_total", "")):
        columns = f"{hour}, {series}" if series else hour
        groups = "1, 2, 3, 4, 5, 6" if series else "1"
        names = f"bucket, {series}" if series else "bucket"
        op.execute(
            # Built from constants only.
            f"INSERT INTO {table} ({names}, events, score_sum, score_min, score_max) "  # noqa: S608
            f"SELECT {columns}, count(*), sum(score), min(score), max(score) "
            f"FROM events GROUP BY {groups} ORDER BY 1"
        )


def downgrade() -> None:
    op.drop_table("event_rollups_hourly_total")
    op.drop_table("event_rollups_hourly")
