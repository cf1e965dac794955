"""The refusals a route can answer, for OpenAPI: each a ``Problem`` (cloud_api/schemas.py);
and ``json_response``, a large answer serialized once.

A route declares every 4xx it can give, so a client (and schemathesis) can check the
answer against the contract: ``responses=problems(404, 409)``. Routers declare the ones
every route of theirs shares (401 and 403 from authentication).
"""

from __future__ import annotations

from typing import Any

from fastapi import Response
from pydantic import BaseModel

from cloud_api.schemas import Problem

_MEANING = {
    400: "the body is not JSON, or a parameter is not what this API gave out (a cursor)",
    401: "no credentials, or unknown or revoked ones",
    403: "valid credentials without the scope, or an agent asking about another agent",
    404: "the resource does not exist",
    409: "the request conflicts with the current state",
    413: "the request body is over its size limit",
    422: "a parameter or field is out of its range or malformed: the detail names it",
}

AUTHENTICATED = (401, 403)
"""What every route behind ``require(...)`` can answer."""


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these status codes, each with the ``Problem`` body."""
    return {code: {"model": Problem, "description": _MEANING[code]} for code in codes}


def json_response(model: BaseModel) -> Response:
    """``model`` as its JSON, serialized once by pydantic (the route keeps its
    ``response_model`` for OpenAPI). For a large answer (a week of 50 series) this is several
    times faster than FastAPI's own path, which dumps the model to dicts, validates those
    again and encodes the result with the json module."""
    return Response(content=model.model_dump_json(), media_type="application/json")
