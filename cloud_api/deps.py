"""Request dependencies, declared once as ``Annotated`` aliases; who is calling, and may they.

Callers authenticate with ``Authorization: Bearer aiot_...`` (an API key, see
``cloud_api/auth.py``) or, for agents, HTTP Basic with their enrollment credentials
(``cloud_api/callers.py``). The guard (``cloud_api/guard.py``) authenticates every ``/api/``
request from its headers before anything else: 401 (with ``WWW-Authenticate``) when the
credentials are missing, malformed, unknown or revoked. ``require(scope)`` is the per-route
check: 403 when they are valid but not enough.
Agents pass only routes that opt in with ``agents=True``, and those routes check that the
agent reads only its own data (``Principal.check_agent``).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import Depends, HTTPException, Request
from fastapi.security import (
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
)
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from cloud_api.auth import Scope, scope_allows
from cloud_api.callers import Principal, authenticate
from cloud_api.config import Settings
from cloud_api.registry import ArtifactStore

T = TypeVar("T")


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


# auto_error=False: the guard (cloud_api/guard.py) has answered 401 already; these declare
# both schemes in OpenAPI, so /docs gets an Authorize button.
_BEARER = HTTPBearer(auto_error=False, description="an API key: aiot_<key id>_<secret>")
_BASIC = HTTPBasic(auto_error=False, description="an agent: its id and enrollment password")

PRINCIPAL = "aiot.principal"
"""Where the guard leaves the caller in the request's state."""


async def get_principal(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    basic: Annotated[HTTPBasicCredentials | None, Depends(_BASIC)],
) -> Principal:
    """The caller, as the guard authenticated it from the headers before anything was read.

    ``bearer`` and ``basic`` are there for OpenAPI: they parse the header the guard has read.
    A route outside the guard's paths authenticates here, by the same rules.
    """
    state = request.scope.get("state", {})
    if PRINCIPAL in state:
        principal: Principal = state[PRINCIPAL]
        return principal
    app_state = request.app.state
    authorization = request.headers.get("authorization")
    return await run_in_threadpool(
        authenticate, app_state.settings, app_state.sessionmaker, authorization
    )


PrincipalDep = Annotated[Principal, Depends(get_principal)]


@dataclass(frozen=True)
class Requirement:
    """What a route asks of its caller: a key with at least ``scope``; an agent if ``agents``.

    Declared with ``require``; checked by its dependency, and by the guard as soon as the route
    first reads its body, which FastAPI does before it solves any dependency.
    """

    scope: Scope
    agents: bool = False

    def check(self, principal: Principal) -> None:
        """A 403 HTTPException naming what is missing, unless ``principal`` meets this."""
        if principal.kind == "agent":
            if not self.agents:
                raise HTTPException(
                    403, f"agent {principal.name!r} may not use this route (needs an API key)"
                )
            return
        assert principal.scope is not None
        if not scope_allows(principal.scope, self.scope):
            raise HTTPException(
                403,
                f"this route needs scope {self.scope!r}; "
                f"key {principal.name!r} has {principal.scope!r}",
            )

    # async: a pure check, so FastAPI runs it inline instead of on a worker thread.
    async def dependency(self, principal: PrincipalDep) -> Principal:
        """The route's dependency: the caller, if it meets this requirement."""
        self.check(principal)
        return principal


def require(
    scope: Scope, *, agents: bool = False
) -> Callable[[Principal], Coroutine[Any, Any, Principal]]:
    """A dependency that lets through keys with at least ``scope`` (and agents if ``agents``).

    Use it as ``dependencies=[Depends(require("operate"))]`` on a route, or as
    ``Annotated[Principal, Depends(require("read", agents=True))]`` where the route needs
    to know who calls.
    """
    # A bound method rather than the object: FastAPI resolves its annotations like a function's.
    return Requirement(scope, agents).dependency


def declared(route: object, kind: type[T]) -> list[T]:
    """The ``kind`` objects (Requirement, BodyLimit) whose bound method ``route`` depends on.

    ``route`` is the matched route from the ASGI scope; anything but an APIRoute declares none.
    """
    dependant = getattr(route, "dependant", None)
    pending = list(dependant.dependencies) if dependant is not None else []
    found: list[T] = []
    while pending:
        dependency = pending.pop()
        owner = getattr(dependency.call, "__self__", None)
        if isinstance(owner, kind):
            found.append(owner)
        pending.extend(dependency.dependencies)
    return found


ReadDep = Annotated[Principal, Depends(require("read"))]
OperateDep = Annotated[Principal, Depends(require("operate"))]
AdminDep = Annotated[Principal, Depends(require("admin"))]
ReadOrAgentDep = Annotated[Principal, Depends(require("read", agents=True))]
"""A key with ``read``, or an agent (the route then calls ``check_agent``)."""
