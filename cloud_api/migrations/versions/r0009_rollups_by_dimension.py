"""Hourly rollups per single dimension (agent, pipeline, label, kind, model version),
backfilled from the per-series rollups.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cloud_api.tables import UtcDateTime

revision = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None

# As they were at this revision (cloud_api.tables.ROLLUP_DIMENSIONS may change later).
DIMENSIONS = {"agent_id": 64, "pipeline": 64, "label": 128, "kind": 64, "model_version": 64}


def upgrade() -> None:
    for dimension, length in DIMENSIONS.items():
        table = f"event_rollups_hourly_by_{dimension}"
        op.create_table(
            table,
            sa.Column("bucket", UtcDateTime(), nullable=False),
            sa.Column(dimension, sa.String(length), nullable=False),
            sa.Column("events", sa.BigInteger(), nullable=False),
            sa.Column("score_sum", sa.Float(), nullable=False),
            sa.Column("score_min", sa.Float(), nullable=False),
            sa.Column("score_max", sa.Float(), nullable=False),
            sa.PrimaryKeyConstraint(
                "bucket",
                dimension,
                postgresql_include=["events", "score_sum", "score_min", "score_max"],
            ),
        )
        # Counts and sums add, min and max combine: the series rows hold all it needs.
        op.execute(
            # Built from constants only.
            f"INSERT INTO {table} (bucket, {dimension}, events, score_sum, score_min, "  # noqa: S608
            f"score_max) SELECT bucket, {dimension}, sum(events), sum(score_sum), "
            f"min(score_min), max(score_max) FROM event_rollups_hourly GROUP BY 1, 2 ORDER BY 1"
        )


def downgrade() -> None:
    for dimension in reversed(DIMENSIONS):
        op.drop_table(f"event_rollups_hourly_by_{dimension}")
