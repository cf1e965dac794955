"""Signed model manifests: Ed25519 over canonical JSON, so an agent can trust what it runs.

No I/O: keys are passed in. The signature covers every field of the manifest (the sha256
of the artifact among them), so a tampered artifact or a tampered field is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Annotated

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import BaseModel, ConfigDict, Field, Strict, StringConstraints

from shared.errors import SignatureError
from shared.fields import Count, FiniteFloat, Int64, SafeText, Sha256

MAX_TENSORS = 64
MAX_RANK = 64
MAX_LABELS = 65536
MAX_GOLDEN_VALUES = 4096

Text = Annotated[str, Strict(), StringConstraints(max_length=256), SafeText]
ShortText = Annotated[str, Strict(), StringConstraints(max_length=64), SafeText]
Dimension = Int64 | ShortText | None
"""A size, a symbol for a dynamic axis (``batch``), or unknown."""


class TensorSpec(BaseModel):
    """One input or output of a model: its name, element type and shape (None or a symbol
    for a dynamic axis such as ``batch``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Text
    dtype: ShortText
    shape: list[Dimension] = Field(max_length=MAX_RANK)


class ModelManifest(BaseModel):
    """What an agent needs to trust and load one model version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ShortText
    version: ShortText
    sha256: Sha256
    size: Count
    task: ShortText = ""
    inputs: list[TensorSpec] = Field(max_length=MAX_TENSORS)
    outputs: list[TensorSpec] = Field(max_length=MAX_TENSORS)
    labels: list[Annotated[str, Strict(), StringConstraints(max_length=128), SafeText]] = Field(
        default=[], max_length=MAX_LABELS
    )
    golden_input: Text | None = Field(
        default=None, description="reference to a self-test input (optional)"
    )
    golden_output: list[FiniteFloat] | None = Field(
        default=None,
        max_length=MAX_GOLDEN_VALUES,
        description="the output expected for golden_input (optional)",
    )


class SignedManifest(BaseModel):
    """A manifest with its Ed25519 signature (base64) and the id of the key that made it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    manifest: ModelManifest
    signature: Annotated[str, Strict(), StringConstraints(max_length=256), SafeText]
    key_id: ShortText


def canonical_bytes(manifest: ModelManifest) -> bytes:
    """The bytes that are signed: sorted keys, no spaces, UTF-8; equal manifests, equal bytes."""
    return json.dumps(
        manifest.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()


def public_key_bytes(public_key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of a public key."""
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short stable name for a key (sha256 of its raw bytes, 16 hex digits)."""
    return hashlib.sha256(public_key_bytes(public_key)).hexdigest()[:16]


def encode_public_key(public_key: Ed25519PublicKey) -> str:
    """The public key as base64 of its raw bytes: what agents are given."""
    return base64.b64encode(public_key_bytes(public_key)).decode()


def decode_public_key(text: str) -> Ed25519PublicKey:
    """A public key from base64 of its 32 raw bytes; SignatureError if it is not one."""
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(f"not a base64 Ed25519 public key: {exc}") from None


def sign(manifest: ModelManifest, private_key: Ed25519PrivateKey) -> SignedManifest:
    """Sign ``manifest`` with ``private_key``."""
    signature = private_key.sign(canonical_bytes(manifest))
    return SignedManifest(
        manifest=manifest,
        signature=base64.b64encode(signature).decode(),
        key_id=key_id(private_key.public_key()),
    )


def verify(signed: SignedManifest, public_key: Ed25519PublicKey) -> ModelManifest:
    """The manifest if ``public_key`` signed exactly this content; SignatureError otherwise."""
    expected = key_id(public_key)
    if signed.key_id != expected:
        raise SignatureError(f"manifest signed by key {signed.key_id}, expected key {expected}")
    try:
        signature = base64.b64decode(signed.signature, validate=True)
    except binascii.Error:
        raise SignatureError("manifest signature is not base64") from None
    try:
        public_key.verify(signature, canonical_bytes(signed.manifest))
    except InvalidSignature:
        raise SignatureError(
            f"signature of {signed.manifest.name} {signed.manifest.version} does not match "
            "its content (tampered, or signed by another key)"
        ) from None
    return signed.manifest
