"""SQL tables (SQLAlchemy 2.0 typed ORM): events, summaries, agents, dead letters, models, API
keys, broker users, deployments and desired states, agents' remote configurations, samples
with their labels and event feedback, cloud models and escalations; the rollups of events and
of summaries' signals are in ``rollup_tables.py``, on the same ``Base`` (the migrations'
environment imports both).

Every other SQL table lives here (DESIGN §2), each a short class with its indexes.
Over 400 lines: one short class per table, and DESIGN §2 keeps them in one module.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

Json = JSON().with_variant(JSONB(), "postgresql")
BigId = BigInteger().with_variant(Integer(), "sqlite")
"""A 64-bit surrogate key; SQLite only auto-increments a column spelled INTEGER."""


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime stored as UTC.

    SQLite has no time zones: values are stored as naive UTC text of fixed width (so ordering
    and keyset comparisons work) and read back as aware UTC. PostgreSQL uses ``timestamptz``.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: store timezone-aware values only")
        if dialect.name == "sqlite":
            return value.astimezone(UTC).replace(tzinfo=None)
        return value

    def bind_processor(self, dialect: Dialect) -> Callable[[datetime | None], Any] | None:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)
        # Ingest binds two of these per event: one C-level isoformat instead of two Python
        # layers. The text is exactly SQLAlchemy's own SQLite storage format.
        return sqlite_utc_text

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def sqlite_utc_text(value: datetime | None) -> str | None:
    """How ``UtcDateTime`` stores a time on SQLite: naive UTC text, fixed width."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: store timezone-aware values only")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


class Base(DeclarativeBase):
    """Declarative base; its metadata is what the migrations must produce."""


class EventRow(Base):
    """One edge event; ``id`` is the edge's event id, so re-delivery inserts nothing."""

    __tablename__ = "events"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(64))
    pipeline: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(String(128))
    score: Mapped[float] = mapped_column(Float)
    ts: Mapped[datetime] = mapped_column(UtcDateTime)
    seq: Mapped[int] = mapped_column(BigInteger)
    model_name: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(64))
    model_sha256: Mapped[str] = mapped_column(String(64))
    attributes: Mapped[dict[str, Any]] = mapped_column(Json)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        # Keyset pagination walks (ts, id) newest first; each filter leads its own index.
        Index("ix_events_ts_id", "ts", "id"),
        Index("ix_events_agent_ts", "agent_id", "ts", "id"),
        Index("ix_events_pipeline_ts", "pipeline", "ts", "id"),
        Index("ix_events_label_ts", "label", "ts", "id"),
        # Live streams (routes/stream.py) read events in ingestion order.
        Index("ix_events_received_at_id", "received_at", "id"),
    )


class SummaryRow(Base):
    """One pipeline's summary of one window: what it read (raw bytes) against what it sent.

    ``(agent_id, pipeline, window_start)`` is unique (an agent's windows of one pipeline
    never share a start), so re-delivery inserts nothing. ``events`` is the sum of
    ``events_by_label``, kept as a column so that reports add it up in SQL.
    """

    __tablename__ = "summaries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    agent_id: Mapped[str] = mapped_column(String(64))
    pipeline: Mapped[str] = mapped_column(String(64))
    window_start: Mapped[datetime] = mapped_column(UtcDateTime)
    window_end: Mapped[datetime] = mapped_column(UtcDateTime)
    samples_in: Mapped[int] = mapped_column(BigInteger)
    inferences: Mapped[int] = mapped_column(BigInteger)
    gated: Mapped[int] = mapped_column(BigInteger)
    events: Mapped[int] = mapped_column(BigInteger)
    events_by_label: Mapped[dict[str, int]] = mapped_column(Json)
    signals: Mapped[dict[str, Any]] = mapped_column(Json)
    raw_bytes: Mapped[int] = mapped_column(BigInteger)
    sent_bytes: Mapped[int] = mapped_column(BigInteger)
    model_name: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(64))
    model_sha256: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        UniqueConstraint("agent_id", "pipeline", "window_start", name="uq_summaries_window"),
        # Fleet-wide reports filter on time alone; per-agent ones use the unique index.
        Index("ix_summaries_window_start", "window_start"),
    )


class AgentRow(Base):
    """The last status an agent reported; ``last_seen`` is when it last said it was online."""

    __tablename__ = "agents"

    agent_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(256))
    last_status: Mapped[dict[str, Any]] = mapped_column(Json)
    last_seen: Mapped[datetime | None] = mapped_column(UtcDateTime)
    heartbeat_s: Mapped[float] = mapped_column(Float)
    labels: Mapped[dict[str, str]] = mapped_column(Json, default=dict, server_default="{}")
    """Set at enrollment (``site: plant-1``); deployments select agents by them."""
    # Enrollment owns these three and ingest never writes them (cloud_api/credentials.py).
    password_hash: Mapped[str | None] = mapped_column(String(256))
    """Mosquitto's ``$7$`` PBKDF2-SHA512 format: the broker's password file is written from it."""
    enrolled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    credentials_revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ApiKeyRow(Base):
    """An API key for dashboards and operators; only the sha256 of its token is stored."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_id: Mapped[str] = mapped_column(String(12))
    name: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(Json)
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (UniqueConstraint("key_id", name="uq_api_keys_key_id"),)


class BrokerUserRow(Base):
    """An MQTT service user (the cloud's ``ingest`` or ``control`` side) with its ACL role."""

    __tablename__ = "broker_users"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class DeadLetterRow(Base):
    """A message ingest could not store, kept with the reason so bad input never stops ingest."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(512))
    payload: Mapped[str] = mapped_column(Text)
    payload_size: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ModelVersionRow(Base):
    """One registered model version; ``manifest`` is the signed manifest agents verify.

    ``(name, version)`` is unique: a published version is never replaced, so what an agent
    reports running always names one artifact.
    """

    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    task: Mapped[str] = mapped_column(String(64))
    inputs: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    outputs: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    labels: Mapped[list[str]] = mapped_column(Json)
    manifest: Mapped[dict[str, Any]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (UniqueConstraint("name", "version", name="uq_model_versions_name_version"),)


class DeploymentRow(Base):
    """One rollout of a model version to a pipeline on a set of agents (``cloud_api.rollout``).

    ``state``: canary -> rolling -> succeeded, or halted / cancelled. ``target`` and
    ``strategy`` are kept as they were requested; the agents it resolved to are the
    ``deployment_agents`` rows, fixed at creation.
    """

    __tablename__ = "deployments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    pipeline: Mapped[str] = mapped_column(String(64))
    target: Mapped[dict[str, Any]] = mapped_column(Json)
    strategy: Mapped[dict[str, Any]] = mapped_column(Json)
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        # The rollout worker reads the active deployments every tick; the API lists by state.
        Index("ix_deployments_state", "state"),
    )


class DeploymentAgentRow(Base):
    """Where one agent of one deployment stands.

    ``previous`` is the agent's desired entry for the pipeline before this deployment (JSON of
    a ``DesiredModel``, or None when the pipeline ran the agent's configured model): what a
    rollback puts back. ``updated_at`` is when ``state`` last changed, which is what the
    timeout and the canary's healthy time are measured from.
    """

    __tablename__ = "deployment_agents"
    # (deployment_id, agent_id) is the primary key: an agent is in a deployment at most once.

    deployment_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    phase: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    previous: Mapped[dict[str, Any] | None] = mapped_column(Json, nullable=True)
    running_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ShadowReportRow(Base):
    """The last shadow report one agent gave for one shadow deployment (a ``ShadowReport`` as
    JSON): kept after the agent drops the candidate, so the figures outlive the window."""

    __tablename__ = "shadow_reports"

    deployment_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    report: Mapped[dict[str, Any]] = mapped_column(Json)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class DesiredStateRow(Base):
    """The whole desired state last issued to one agent (a ``DesiredState`` as JSON).

    The broker keeps it retained; this row lets the cloud build the next one from it and
    publish it again when the broker lost it. ``updated_at`` equals the payload's
    ``issued_at``.
    """

    __tablename__ = "desired_states"

    agent_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    payload: Mapped[dict[str, Any]] = mapped_column(Json)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class AgentConfigRow(Base):
    """The overlay last set for one agent, published retained on its ``config`` topic (a
    ``ConfigOverlay``; ``version`` grows with each change, ``updated_at`` is its issued_at)."""

    __tablename__ = "agent_configs"

    agent_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    overlay: Mapped[dict[str, Any]] = mapped_column(Json)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __mapper_args__ = {"version_id_col": version}
    """Each UPDATE is ``... WHERE version = <read>`` and bumps it: two writers that read the
    same version cannot both commit it (the second gets ``StaleDataError``)."""


class SampleRow(Base):
    """A kept input (``shared.samples.SampleMeta``); its blob is in the artifact store."""

    __tablename__ = "samples"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(64))
    pipeline: Mapped[str] = mapped_column(String(64))
    ts: Mapped[datetime] = mapped_column(UtcDateTime)
    reason: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[str | None] = mapped_column(String(36))
    sha256: Mapped[str] = mapped_column(String(64))
    meta: Mapped[dict[str, Any]] = mapped_column(Json)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (
        Index("ix_samples_ts_id", "ts", "id"),
        Index("ix_samples_agent_ts", "agent_id", "ts", "id"),
        Index("ix_samples_event", "event_id"),
    )


class SampleLabelRow(Base):
    """A sample's label, its ``source`` (edge, cloud, person), author and ``model version``."""

    __tablename__ = "sample_labels"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    sample_id: Mapped[str] = mapped_column(String(36), index=True)
    label: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(16))
    author: Mapped[str] = mapped_column(String(64))
    verdict: Mapped[str | None] = mapped_column(String(16))
    model: Mapped[str | None] = mapped_column(String(130))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)

    __table_args__ = (Index("ix_sample_labels_label_source", "label", "source", "sample_id"),)


class EventFeedbackRow(Base):
    """A person's verdict on an event (who, when); labels its samples, later ones too."""

    __tablename__ = "event_feedback"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), index=True)
    verdict: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(String(128))
    author: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


def core_table(row: type[Base]) -> Table:
    """The Core handle of an ORM class's table, for bulk statements (ingest, retention)."""
    assert isinstance(row.__table__, Table)
    return row.__table__


EVENTS = core_table(EventRow)
SUMMARIES = core_table(SummaryRow)
AGENTS = core_table(AgentRow)
DEAD_LETTERS = core_table(DeadLetterRow)


class CloudModelRow(Base):
    """The registry version that answers a pipeline's escalations (``cloud_api.escalation``)."""

    __tablename__ = "cloud_models"

    pipeline: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    normal_label: Mapped[str | None] = mapped_column(String(128))
    """A classifier's healthy label: its score is then 1 - p(normal), as on the edge."""
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_by: Mapped[str] = mapped_column(String(64))


class EscalationRow(Base):
    """One escalation and the cloud's answer; ``id`` is the agent's, so a repeat runs nothing."""

    __tablename__ = "escalations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(64))
    pipeline: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str | None] = mapped_column(String(36))
    sample_id: Mapped[str | None] = mapped_column(String(36), index=True)
    edge_model: Mapped[str] = mapped_column(String(130))
    edge_label: Mapped[str] = mapped_column(String(128))
    edge_score: Mapped[float] = mapped_column(Float)
    cloud_model: Mapped[str | None] = mapped_column(String(130))
    cloud_label: Mapped[str | None] = mapped_column(String(128))
    cloud_score: Mapped[float | None] = mapped_column(Float)
    agree: Mapped[bool | None] = mapped_column(Boolean)
    ts: Mapped[datetime] = mapped_column(UtcDateTime)
    answered_at: Mapped[datetime] = mapped_column(UtcDateTime)
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    result: Mapped[dict[str, Any]] = mapped_column(Json)
    """The EscalationResult as sent: a repeated id is answered with exactly it."""

    __table_args__ = (
        Index("ix_escalations_answered_id", "answered_at", "id"),
        Index("ix_escalations_agent_pipeline", "agent_id", "pipeline", "answered_at"),
    )
