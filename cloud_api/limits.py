"""Request body limits, enforced while the body streams in.

Every body has a limit: the route's own ``BodyLimit`` (a model upload: its file plus the form
around it), else ``AIOT_MAX_BODY_BYTES`` (64 KiB of JSON). The router has matched the route
before the route reads its body, so the limit is known at the first read: a body whose
``Content-Length`` is over it is refused then, before a byte is read; a body without one
(chunked) is counted as it arrives and refused the moment it passes the limit. The route sees
the refusal as an HTTPException (413, naming the limit) raised by its read, so its own
cleanup runs as for any failed read, and the client gets the 413 instead of a response.
Bytes the route never asks for are never read.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud_api.config import Settings
from cloud_api.deps import declared


class BodyTooLarge(HTTPException):
    """A request body over its route's limit: 413, naming the limit."""

    def __init__(self, limit: Limit) -> None:
        detail = f"request body is larger than this route's limit of {limit.size} bytes"
        super().__init__(413, f"{detail} ({limit.note})" if limit.note else detail)


@dataclass(frozen=True)
class Limit:
    """How many bytes a body may have, and what that means to the caller."""

    size: int
    note: str = ""


@dataclass(frozen=True)
class BodyLimit:
    """A route's own body limit, computed from the settings; see ``body_limit``."""

    limit_of: Callable[[Settings], Limit]

    async def dependency(self) -> None:
        """Nothing to do per request: ``LimitBodies`` reads the declaration."""


def body_limit(limit_of: Callable[[Settings], Limit]) -> Callable[[], Coroutine[Any, Any, None]]:
    """Declare a route's body limit: ``dependencies=[Depends(body_limit(...))]``."""
    return BodyLimit(limit_of).dependency


def route_limit(route: object, settings: Settings) -> Limit:
    """The body limit of the matched ``route``: its own, else ``AIOT_MAX_BODY_BYTES``."""
    limits = [declaration.limit_of(settings) for declaration in declared(route, BodyLimit)]
    return min(limits, key=lambda limit: limit.size, default=Limit(settings.max_body_bytes))


class LimitBodies:
    """ASGI middleware: each request body is bounded by its route's limit as it is read."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        reader = _BoundedReader(scope, receive)

        async def send_watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                reader.response_started = True
            await send(message)

        await self.app(scope, reader.receive, send_watched)


class _BoundedReader:
    """One request's ``receive``, counting body bytes against the route's limit."""

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self._scope = scope
        self._receive = receive
        length = Headers(scope=scope).get("content-length", "")
        # The server has refused a Content-Length that is not a number already.
        self._declared = int(length) if length.isdigit() else None
        self._limit: Limit | None = None
        self._received = 0
        self.response_started = False

    async def receive(self) -> Message:
        if self._limit is None:
            # The first read: the router has matched the route by now.
            self._limit = route_limit(self._scope.get("route"), self._scope["app"].state.settings)
        size = self._limit.size
        if (self._declared or 0) > size or self._received > size:
            return self._refuse(self._limit)
        message = await self._receive()
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            if self._received > size:
                return self._refuse(self._limit)
        return message

    def _refuse(self, limit: Limit) -> Message:
        if self.response_started:
            # Too late for a 413: the route stops reading as if the client had gone.
            return {"type": "http.disconnect"}
        raise BodyTooLarge(limit)
