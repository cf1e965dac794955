"""``/api/v1/keys`` (admin): create, list and revoke API keys; a token is shown once."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException

from cloud_api import auth
from cloud_api.deps import SessionDep, require
from cloud_api.params import KeyIdPath
from cloud_api.responses import AUTHENTICATED, problems
from cloud_api.schemas import ApiKeyCreated, ApiKeyIn, ApiKeyOut

router = APIRouter(
    prefix="/api/v1/keys",
    tags=["keys"],
    dependencies=[Depends(require("admin"))],
    responses=problems(*AUTHENTICATED),
)


@router.post("", status_code=201, response_model=ApiKeyCreated, responses=problems(413, 422))
def create_key(body: ApiKeyIn, session: SessionDep) -> ApiKeyCreated:
    """A new key; its token is in this answer only."""
    row, token = auth.create_api_key(session, name=body.name, scope=body.scope)
    return ApiKeyCreated(**ApiKeyOut.model_validate(row).model_dump(), token=token)


@router.get("", response_model=list[ApiKeyOut])
def list_keys(session: SessionDep) -> list[ApiKeyOut]:
    """Every key, revoked ones too, without secrets."""
    return [ApiKeyOut.model_validate(row) for row in auth.list_api_keys(session)]


@router.delete("/{key_id}", response_model=ApiKeyOut, responses=problems(404, 422))
def revoke_key(key_id: KeyIdPath, session: SessionDep) -> ApiKeyOut:
    """Revoke a key: requests with it get 401 from now on."""
    row = auth.revoke_api_key(session, key_id)
    if row is None:
        raise HTTPException(404, f"no API key {key_id!r}")
    return ApiKeyOut.model_validate(row)
