"""``/api/v1/signing-key``: the public key agents verify model manifests with."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from cloud_api.deps import SigningKeyDep, require
from cloud_api.responses import AUTHENTICATED, problems
from cloud_api.schemas import SigningKeyOut
from shared.signing import encode_public_key, key_id

router = APIRouter(
    prefix="/api/v1/signing-key",
    tags=["models"],
    dependencies=[Depends(require("read"))],
    responses=problems(*AUTHENTICATED),
)


@router.get("", response_model=SigningKeyOut)
def get_signing_key(key: SigningKeyDep) -> SigningKeyOut:
    """The cloud's Ed25519 public key (base64 of its raw bytes) and its key id."""
    public = key.public_key()
    return SigningKeyOut(key_id=key_id(public), public_key=encode_public_key(public))
