"""An index on sample labels by label and source: ``GET /api/v1/samples?label=&label_source=``
and the training jobs' dataset selectors find the samples of one label without a scan.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision: str | None = "0016"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_index(
        "ix_sample_labels_label_source", "sample_labels", ["label", "source", "sample_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_sample_labels_label_source", table_name="sample_labels")
