"""Request dependencies, declared once as ``Annotated`` aliases; who is calling, and may they.

Callers authenticate with ``Authorization: Bearer aiot_...`` (an API key, see
``cloud_api/auth.py``) or, for agents, HTTP Basic with their enrollment credentials.
``require(scope)`` is the per-route check: 401 (with ``WWW-Authenticate``) when the
credentials are missing, unknown or revoked, 403 when they are valid but not enough.
Agents pass only routes that opt in with ``agents=True``, and those routes check that the
agent reads only its own data (``Principal.check_agent``).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import Depends, HTTPException, Request
from fastapi.security import (
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
)
from sqlalchemy.orm import Session

from cloud_api.auth import Scope, authenticate_api_key, key_scope, scope_allows
from cloud_api.config import Settings
from cloud_api.credentials import authenticate_agent
from cloud_api.registry import ArtifactStore


def get_session(request: Request) -> Iterator[Session]:
    """A session per request from the app's own sessionmaker."""
    with request.app.state.sessionmaker() as session:
        yield session


def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


def get_artifact_store(request: Request) -> ArtifactStore:
    """The store the app keeps model artifacts in."""
    store: ArtifactStore = request.app.state.artifacts
    return store


def get_signing_key(request: Request) -> Ed25519PrivateKey:
    """The cloud's manifest signing key, loaded (or generated) at start-up."""
    key: Ed25519PrivateKey = request.app.state.signing_key
    return key


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ArtifactStoreDep = Annotated[ArtifactStore, Depends(get_artifact_store)]
SigningKeyDep = Annotated[Ed25519PrivateKey, Depends(get_signing_key)]


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

# auto_error=False: we answer 401 ourselves, with a reason; these also put both schemes
# into OpenAPI, so /docs gets an Authorize button.
_bearer = HTTPBearer(auto_error=False, description="an API key: aiot_<key id>_<secret>")
_basic = HTTPBasic(auto_error=False, description="an agent: its id and enrollment password")
# Bearer only: a Basic challenge would make browsers pop up a login dialog over the dashboard.
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="aiot"'}


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers=_CHALLENGE)


def get_principal(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    basic: Annotated[HTTPBasicCredentials | None, Depends(_basic)],
) -> Principal:
    """The caller, authenticated; 401 naming the problem when that fails."""
    settings: Settings = request.app.state.settings
    if not settings.auth_enabled:
        return AUTH_DISABLED
    # Its own short session: a streaming route must not hold a connection for its lifetime.
    with request.app.state.sessionmaker() as session:
        if bearer is not None:
            return _key_principal(session, bearer.credentials)
        if basic is not None:
            row = authenticate_agent(session, username=basic.username, password=basic.password)
            if row is None:
                raise _unauthorized(f"agent {basic.username!r}: unknown, revoked or wrong password")
            return Principal(kind="agent", name=row.agent_id)
    raise _unauthorized("no credentials: send 'Authorization: Bearer <API key>'")


def _key_principal(session: Session, token: str) -> Principal:
    row = authenticate_api_key(session, token)
    if row is None:
        raise _unauthorized("unknown API key")
    if row.revoked_at is not None:
        raise _unauthorized(f"API key {row.key_id!r} ({row.name}) has been revoked")
    return Principal(kind="key", name=row.name, scope=key_scope(row))


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(
    scope: Scope, *, agents: bool = False
) -> Callable[[Principal], Coroutine[Any, Any, Principal]]:
    """A dependency that lets through keys with at least ``scope`` (and agents if ``agents``).

    Use it as ``dependencies=[Depends(require("operate"))]`` on a route, or as
    ``Annotated[Principal, Depends(require("read", agents=True))]`` where the route needs
    to know who calls.
    """

    # async: a pure check, so FastAPI runs it inline instead of on a worker thread.
    async def check(principal: PrincipalDep) -> Principal:
        if principal.kind == "agent":
            if not agents:
                raise HTTPException(
                    403, f"agent {principal.name!r} may not use this route (needs an API key)"
                )
            return principal
        assert principal.scope is not None
        if not scope_allows(principal.scope, scope):
            raise HTTPException(
                403,
                f"this route needs scope {scope!r}; key {principal.name!r} has {principal.scope!r}",
            )
        return principal

    return check


ReadDep = Annotated[Principal, Depends(require("read"))]
OperateDep = Annotated[Principal, Depends(require("operate"))]
AdminDep = Annotated[Principal, Depends(require("admin"))]
ReadOrAgentDep = Annotated[Principal, Depends(require("read", agents=True))]
"""A key with ``read``, or an agent (the route then calls ``check_agent``)."""
