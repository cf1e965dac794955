"""Alembic environment: runs on the engine that ``cloud_api.db.migrate`` passes in.

No ``alembic.ini`` and no logging set-up: the application owns both.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from cloud_api import rollup_tables
from cloud_api.tables import Base
from cloud_api.training import tables as training_tables

# Every table module on ``Base``: tables.py, and the rollups and training apart.
target_metadata = Base.metadata
assert rollup_tables.EVENT_ROLLUPS.metadata is target_metadata
assert training_tables.TrainingJobRow.metadata is target_metadata


def run_migrations_online() -> None:
    engine = context.config.attributes.get("engine")
    if not isinstance(engine, Engine):
        raise RuntimeError("run migrations through cloud_api.db.migrate(engine)")
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            # SQLite cannot ALTER most things: later revisions copy tables in batch mode.
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported")
run_migrations_online()
