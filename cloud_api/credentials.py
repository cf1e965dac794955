"""Broker and HTTP credentials: agents (enrollment) and the cloud's own MQTT service users.

Agents and service users share one MQTT username space: an agent's username is its id, and
an id that is a service user's name, or one of the role names ``ingest`` and ``control``
(reserved even before those users exist), cannot be enrolled; nor can a service user take
an enrolled agent's id. The broker's ACL gives each username its own block
(``cloud_api/broker_config.py``), so the two never share rights.

Enrollment owns ``password_hash``, ``enrolled_at``, ``credentials_revoked_at`` and
``labels`` on the ``agents`` row; ingest's status upsert owns the status columns. Either may
create the row first, and neither writes the other's columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, get_args

from sqlalchemy import or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from cloud_api.passwords import mosquitto_hash, new_password, verify_mosquitto_hash
from cloud_api.tables import AgentRow, BrokerUserRow
from shared.errors import ConflictError, ContractError
from shared.messages import utcnow
from shared.topics import check_agent_id

BrokerRole = Literal["ingest", "control"]
BROKER_ROLES: tuple[BrokerRole, ...] = get_args(BrokerRole)
NOT_CONNECTED = "enrolled; has not connected yet"


def enroll_agent(
    session: Session, *, agent_id: str, labels: dict[str, str], password: str | None = None
) -> tuple[AgentRow, str]:
    """Give ``agent_id`` credentials (committed); the password is returned once, never stored.

    ConflictError if the agent already has live credentials or the name is a service user's;
    ContractError if the id cannot be a topic level. An agent whose credentials were revoked
    may be enrolled again.
    """
    check_agent_id(agent_id)
    if agent_id in BROKER_ROLES or session.get(BrokerUserRow, agent_id) is not None:
        raise ConflictError(f"{agent_id!r} is an MQTT service user's name; choose another id")
    password = password or new_password()
    now = utcnow()
    credentials: dict[str, Any] = {
        "labels": labels,
        "password_hash": mosquitto_hash(password),
        "enrolled_at": now,
        "credentials_revoked_at": None,
    }
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(AgentRow)
        .values(
            agent_id=agent_id,
            state="offline",
            reason=NOT_CONNECTED,
            last_status={},
            last_seen=None,
            heartbeat_s=0.0,
            **credentials,
        )
        # One statement decides, so two enrollments of one id cannot both get credentials;
        # a row that ingest created from a status keeps its status columns.
        .on_conflict_do_update(
            index_elements=["agent_id"],
            set_=credentials,
            where=or_(
                AgentRow.password_hash.is_(None), AgentRow.credentials_revoked_at.is_not(None)
            ),
        )
        .returning(AgentRow.agent_id)
    )
    if session.execute(statement).scalar_one_or_none() is None:
        session.rollback()
        raise ConflictError(
            f"agent {agent_id!r} is enrolled already: rotate its credentials with "
            f"POST /api/v1/agents/{agent_id}/credentials"
        )
    session.commit()
    row = session.get(AgentRow, agent_id, populate_existing=True)
    assert row is not None
    return row, password


def rotate_agent_credentials(session: Session, *, agent_id: str) -> tuple[AgentRow, str] | None:
    """A new password for an enrolled agent (the old one stops working); None if never enrolled."""
    row = session.get(AgentRow, agent_id)
    if row is None or row.enrolled_at is None:
        return None
    password = new_password()
    row.password_hash = mosquitto_hash(password)
    row.credentials_revoked_at = None
    session.commit()
    return row, password


def revoke_agent_credentials(session: Session, *, agent_id: str) -> AgentRow | None:
    """Revoke an agent's credentials from now on (committed); None if it was never enrolled."""
    row = session.get(AgentRow, agent_id)
    if row is None or row.enrolled_at is None:
        return None
    if row.credentials_revoked_at is None:
        row.credentials_revoked_at = utcnow()
        session.commit()
    return row


def authenticate_agent(session: Session, *, username: str, password: str) -> AgentRow | None:
    """The enrolled agent these credentials belong to, or None (unknown, revoked, wrong)."""
    row = session.get(AgentRow, username)
    if row is None or row.password_hash is None or row.credentials_revoked_at is not None:
        return None
    return row if verify_mosquitto_hash(password, row.password_hash) else None


def enrolled_agents(session: Session) -> Sequence[AgentRow]:
    """Agents with live credentials, by id: the ones the broker lets in."""
    query = (
        select(AgentRow)
        .where(AgentRow.password_hash.is_not(None), AgentRow.credentials_revoked_at.is_(None))
        .order_by(AgentRow.agent_id)
    )
    return session.scalars(query).all()


def create_broker_user(
    session: Session, *, username: str, role: BrokerRole, password: str | None = None
) -> tuple[BrokerUserRow, str, bool]:
    """Create a service user, or set a new password and role on it (committed).

    Returns the row, its password (generated unless given) and whether it was created.
    """
    try:
        check_agent_id(username)
    except ContractError:
        raise ContractError(
            f"broker user name {username!r} must be 1-64 letters, digits, '_', '.', '-'"
        ) from None
    if role not in BROKER_ROLES:
        raise ContractError(f"unknown role {role!r}: expected one of {', '.join(BROKER_ROLES)}")
    agent = session.get(AgentRow, username)
    if agent is not None and agent.enrolled_at is not None:
        raise ConflictError(f"{username!r} is an enrolled agent's id; choose another name")
    password = password or new_password()
    row = session.get(BrokerUserRow, username)
    created = row is None
    if row is None:
        row = BrokerUserRow(username=username, created_at=utcnow())
        session.add(row)
    row.role = role
    row.password_hash = mosquitto_hash(password)
    session.commit()
    return row, password, created


def broker_users(session: Session) -> Sequence[BrokerUserRow]:
    """Every service user, by name."""
    return session.scalars(select(BrokerUserRow).order_by(BrokerUserRow.username)).all()
