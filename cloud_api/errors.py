"""What an error looks like on the wire: FastAPI's ``{"detail": ...}``, nothing of the inside.

A 4xx body is ``{"detail": "<what is wrong>"}`` (a list of problems for a request that fails
validation, 422). Its text comes from our code and sometimes carries a library's message
(ONNX Runtime's, say), which may name a file on the server: every detail passes through
``Redactor`` on its way out, which puts ``<server path>`` where the directories the server
keeps files in appear (its data, temp and installation directories). An unexpected exception
is a 500 whose body says only that; its traceback goes to the server's log.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from cloud_api.config import Settings

SERVER_PATH = "<server path>"
INTERNAL = {"detail": "internal server error: the server's log has the cause"}


class Redactor:
    """Replaces paths under the server's own directories in error texts."""

    def __init__(self, roots: list[str]) -> None:
        # Longest first, so that /srv/aiot/data goes whole rather than as /srv/aiot + "/data".
        # A path runs to the next space, quote or punctuation; a relative root only counts
        # before a "/" (the data directory "data" is also a word).
        alternatives = [
            re.escape(root) + ("(?=[/\\s'\":,;)]|$)" if root.startswith("/") else "(?=/)")
            for root in sorted(set(roots), key=len, reverse=True)
        ]
        self._pattern = re.compile(rf"(?<![\w.-])(?:{'|'.join(alternatives)})[^\s'\",;)]*")

    @classmethod
    def for_settings(cls, settings: Settings) -> Redactor:
        """The data directory (as configured and absolute), temp, Python and the code."""
        data = settings.data_dir
        candidates = [
            str(data),
            str(data.resolve()),
            tempfile.gettempdir(),
            sys.prefix,
            sys.base_prefix,
            str(Path(__file__).resolve().parent.parent),
            str(Path.home()),
        ]
        # "/" or "." would swallow every path or word: they are not a root worth naming.
        return cls([root for root in candidates if root.strip("/.")])

    def text(self, text: str) -> str:
        """``text`` with server paths replaced."""
        return self._pattern.sub(SERVER_PATH, text)

    def value(self, value: Any) -> Any:
        """A JSON-able value with every string in it redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.value(item) for item in value]
        if isinstance(value, dict):
            return {key: self.value(item) for key, item in value.items()}
        return value


def install(app: FastAPI, settings: Settings) -> None:
    """Make ``app`` answer every error in the documented shape, with nothing of the inside."""
    redactor = Redactor.for_settings(settings)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        redacted = HTTPException(exc.status_code, redactor.value(exc.detail), exc.headers)
        return await http_exception_handler(request, redacted)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        detail = redactor.value(jsonable_encoder(exc.errors()))
        return JSONResponse({"detail": detail}, status_code=422)

    async def internal_error(request: Request, exc: Exception) -> Response:
        return JSONResponse(INTERNAL, status_code=500)

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, internal_error)
