"""The guard: every ``/api/`` request is authenticated from its headers before anything else.

FastAPI reads and parses a JSON body before it solves a route's dependencies, so an
authenticating dependency comes too late: an anonymous caller could make the server take in
and parse whatever it sends. This ASGI middleware runs before routing, reads only the
``Authorization`` header (``cloud_api/callers.py``) and answers 401 without touching the
body. The route's own requirement (``require`` in ``cloud_api/deps.py``) is checked again
the moment the route first asks for its body, so a key without the scope gets its 403 before
a byte of the body is read; a route without a body meets it in its dependency as before.

Every ``/api/`` path needs credentials, a route that matches none included (a 401, not a 404,
for a caller who cannot prove who they are).
"""

from __future__ import annotations

from fastapi import HTTPException
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud_api.callers import Principal, authenticate
from cloud_api.deps import PRINCIPAL, Requirement, declared

PROTECTED = "/api/"


class Guard:
    """ASGI middleware: 401 for ``/api/`` requests without valid credentials, body unread."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED):
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        authorization = Headers(scope=scope).get("authorization")
        try:
            principal = await run_in_threadpool(
                authenticate, state.settings, state.sessionmaker, authorization
            )
        except HTTPException as refused:
            response = JSONResponse(
                {"detail": refused.detail}, refused.status_code, headers=refused.headers
            )
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})[PRINCIPAL] = principal
        await self.app(scope, _checking_first_read(scope, receive, principal), send)


def _checking_first_read(scope: Scope, receive: Receive, principal: Principal) -> Receive:
    """``receive`` that first checks the matched route's requirements (a 403 HTTPException)."""
    checked = False

    async def receive_checked() -> Message:
        nonlocal checked
        if not checked:
            checked = True
            for requirement in declared(scope.get("route"), Requirement):
                requirement.check(principal)
        return await receive()

    return receive_checked
