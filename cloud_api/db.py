"""Database engine, sessions and migrations: SQLite (WAL) embedded, PostgreSQL in production."""

from __future__ import annotations

import sqlite3
from enum import IntEnum
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from shared.errors import StorageError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 5000


class AdvisoryLock(IntEnum):
    """Every PostgreSQL advisory lock the cloud takes, in one place so no two share a key."""

    MIGRATION = 0x4149_4F54
    """Replicas starting together migrate one at a time."""
    ROLLOUT_TICK = 0x4149_4F55
    """One replica at a time advances deployments (transaction level, per tick)."""
    ROLLOUT_CREATE = 0x4149_4F56
    """Deployment creations are serialised, so two cannot both pass the 409 check."""
    RETENTION = 0x4149_4F57
    """One replica at a time runs a retention round."""
    EVENT_LABELS = 0x4149_4F58
    """With an event's hash as second key: a verdict on the event and a sample of it take
    turns (``cloud_api.queries.samples.hold_labels``)."""
    SAMPLE_LABELS = 0x4149_4F59
    """With a sample id's hash as second key: a sample's upload and the cloud's answer to its
    escalation take turns (``cloud_api.queries.samples.hold_labels``)."""


def create_db_engine(url: str) -> Engine:
    """An engine for ``url``; ``postgresql://`` is routed to psycopg 3, SQLite gets WAL pragmas."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(parsed, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while ingest writes; NORMAL is durable across process crashes in WAL.
    assert isinstance(dbapi_connection, sqlite3.Connection)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def create_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions for request handlers; objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(engine: Engine) -> Config:
    """An Alembic config built in code, so migrations run from any working directory."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (``alembic upgrade head``)."""
    try:
        if engine.dialect.name != "postgresql":
            command.upgrade(alembic_config(engine), "head")
            return
        # Replicas (API workers, ingest processes) start together: one migrates, the others
        # wait for it and then find nothing to do.
        with engine.connect() as lock:
            lock.execute(text("SELECT pg_advisory_lock(:key)"), {"key": AdvisoryLock.MIGRATION})
            try:
                command.upgrade(alembic_config(engine), "head")
            finally:
                lock.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": AdvisoryLock.MIGRATION}
                )
    except SQLAlchemyError as exc:
        raise StorageError(f"database migration failed: {exc}") from exc
