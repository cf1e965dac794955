"""Who calls: the ``Authorization`` header, checked for shape before any SQL sees it.

Two schemes: ``Bearer aiot_<key id>_<secret>`` (an API key, ``cloud_api/auth.py``) and HTTP
Basic with an enrolled agent's id and password (``cloud_api/credentials.py``). A header of
another shape, bytes that are not base64, or a user name that cannot be an agent id (a NUL
byte, say, which PostgreSQL refuses with an error) is refused as malformed: the database only
ever sees a key id of 12 hex digits or a valid agent id. Every refusal is a 401 naming the
problem; ``WWW-Authenticate`` offers Bearer only, because a Basic challenge would make
browsers pop up a login dialog over the dashboard.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Literal

from fastapi import HTTPException
from sqlalchemy.orm import Session, sessionmaker

from cloud_api.auth import Scope, authenticate_api_key, is_well_formed, key_scope
from cloud_api.config import Settings
from cloud_api.credentials import authenticate_agent
from shared.errors import ContractError
from shared.topics import check_agent_id

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="aiot"'}
MAX_PASSWORD = 1024
"""Longer Basic passwords are malformed: ours are 43 characters."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key with its scope, or an enrolled agent."""

    kind: Literal["key", "agent"]
    name: str
    """The key's name, or the agent's id."""
    scope: Scope | None = None
    """The key's scope; None for agents."""

    @property
    def agent_id(self) -> str | None:
        """The agent's id when an agent calls, else None."""
        return self.name if self.kind == "agent" else None

    def check_agent(self, agent_id: str | None) -> None:
        """403 unless a key calls, or the agent calls about itself (``agent_id`` is its own)."""
        if self.kind == "agent" and agent_id != self.name:
            whose = f"agent {agent_id!r}" if agent_id else "every agent"
            raise HTTPException(
                403, f"agent {self.name!r} may read only its own data, not that of {whose}"
            )


AUTH_DISABLED = Principal(kind="key", name="auth-disabled", scope="admin")


@dataclass(frozen=True)
class KeyToken:
    """A well-formed API key token (not yet known to exist)."""

    token: str


@dataclass(frozen=True)
class AgentLogin:
    """Basic credentials whose user name is a valid agent id (not yet checked)."""

    agent_id: str
    password: str


def unauthorized(detail: str) -> HTTPException:
    """The 401 every refusal of credentials is."""
    return HTTPException(401, detail, headers=CHALLENGE)


def parse_authorization(header: str | None) -> KeyToken | AgentLogin:
    """The credentials in an ``Authorization`` header; a 401 HTTPException if malformed."""
    if not header:
        raise unauthorized("no credentials: send 'Authorization: Bearer <API key>'")
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        if not is_well_formed(value):
            raise unauthorized("malformed API key: expected aiot_<12 hex digits>_<secret>")
        return KeyToken(value)
    if scheme.lower() == "basic":
        return _agent_login(value)
    raise unauthorized("unsupported Authorization scheme: send 'Bearer <API key>' or Basic")


def _agent_login(value: str) -> AgentLogin:
    try:
        # ASCII, as FastAPI's HTTPBasic (which documents the scheme in OpenAPI) decodes it.
        text = base64.b64decode(value, validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        raise unauthorized("malformed Basic credentials: not base64 of ASCII text") from None
    username, colon, password = text.partition(":")
    if not colon or not password or len(password) > MAX_PASSWORD:
        raise unauthorized("malformed Basic credentials: expected <agent id>:<password>")
    if not password.isprintable():
        # HMAC pads keys with NUL bytes, so "pw\0" would pass for "pw": refuse, don't compare.
        raise unauthorized("malformed Basic credentials: the password has control characters")
    try:
        check_agent_id(username)
    except ContractError:
        # The name is not echoed: it may be anything, of any length.
        raise unauthorized("malformed Basic credentials: the user name is no agent id") from None
    return AgentLogin(username, password)


def identify(session: Session, credentials: KeyToken | AgentLogin) -> Principal:
    """The key or agent ``credentials`` belong to; a 401 HTTPException naming the problem."""
    if isinstance(credentials, AgentLogin):
        agent = authenticate_agent(
            session, username=credentials.agent_id, password=credentials.password
        )
        if agent is None:
            raise unauthorized(
                f"agent {credentials.agent_id!r}: unknown, revoked or wrong password"
            )
        return Principal(kind="agent", name=agent.agent_id)
    key = authenticate_api_key(session, credentials.token)
    if key is None:
        raise unauthorized("unknown API key")
    if key.revoked_at is not None:
        raise unauthorized(f"API key {key.key_id!r} ({key.name}) has been revoked")
    return Principal(kind="key", name=key.name, scope=key_scope(key))


def authenticate(
    settings: Settings, make_session: sessionmaker[Session], authorization: str | None
) -> Principal:
    """The caller an ``Authorization`` header names (blocking: one short session).

    Everyone is an admin when auth is disabled; else a 401 HTTPException names the problem.
    """
    if not settings.auth_enabled:
        return AUTH_DISABLED
    credentials = parse_authorization(authorization)
    with make_session() as session:
        return identify(session, credentials)
