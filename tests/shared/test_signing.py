"""Signed manifests: what an agent accepts and what it must refuse."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from shared.errors import ContractError, SignatureError
from shared.signing import (
    ModelManifest,
    SignedManifest,
    TensorSpec,
    canonical_bytes,
    decode_public_key,
    encode_public_key,
    sign,
    verify,
)

MANIFEST = ModelManifest(
    name="vibration-anomaly",
    version="1.0.0",
    sha256="aee592a4d1ae05baa3cce91cc7079a19c803c6597a0d9ed80670151efb05fb62",
    size=325038,
    task="vibration-anomaly",
    inputs=[TensorSpec(name="window", dtype="float32", shape=["batch", 2048])],
    outputs=[TensorSpec(name="probabilities", dtype="float32", shape=["batch", 6])],
    labels=["healthy", "imbalance"],
)


def test_round_trip_through_json() -> None:
    key = Ed25519PrivateKey.generate()
    signed = sign(MANIFEST, key)
    received = SignedManifest.model_validate_json(signed.model_dump_json())
    assert verify(received, decode_public_key(encode_public_key(key.public_key()))) == MANIFEST


def test_canonical_bytes_are_sorted_and_compact() -> None:
    data = canonical_bytes(MANIFEST)
    assert b" " not in data
    assert data.startswith(b'{"golden_input":null,"golden_output":null,"inputs":')


def test_tampered_sha256_is_refused() -> None:
    key = Ed25519PrivateKey.generate()
    signed = sign(MANIFEST, key)
    forged = signed.model_copy(
        update={"manifest": MANIFEST.model_copy(update={"sha256": "0" * 64})}
    )
    with pytest.raises(SignatureError, match="does not match its content"):
        verify(forged, key.public_key())


def test_tampered_field_in_json_is_refused() -> None:
    key = Ed25519PrivateKey.generate()
    text = sign(MANIFEST, key).model_dump_json().replace('"size":325038', '"size":325039')
    with pytest.raises(ContractError):
        verify(SignedManifest.model_validate_json(text), key.public_key())


def test_wrong_key_is_refused() -> None:
    signed = sign(MANIFEST, Ed25519PrivateKey.generate())
    with pytest.raises(SignatureError, match="expected key"):
        verify(signed, Ed25519PrivateKey.generate().public_key())


def test_signature_from_another_key_under_the_right_id_is_refused() -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    forged = sign(MANIFEST, other).model_copy(update={"key_id": sign(MANIFEST, key).key_id})
    with pytest.raises(SignatureError, match="does not match"):
        verify(forged, key.public_key())


def test_bad_public_key_is_refused() -> None:
    with pytest.raises(SignatureError, match="public key"):
        decode_public_key("not-base64!")


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"size": "325038"}, "size"),
        ({"size": True}, "size"),
        ({"size": 2**63}, "size"),
        ({"name": "vib\x00"}, "name"),
        ({"version": "v" * 65}, "version"),
        ({"labels": ["ok", 1]}, "labels"),
        ({"golden_output": [0.5, float("nan")]}, "golden_output"),
        ({"golden_output": [float("inf")]}, "golden_output"),
        ({"golden_output": ["0.5"]}, "golden_output"),
        ({"inputs": [{"name": "w", "dtype": "float32", "shape": [2048.0]}]}, "shape"),
        ({"inputs": [{"name": "w", "dtype": "float32", "shape": [True]}]}, "shape"),
        ({"inputs": [{"name": "w\x00", "dtype": "float32", "shape": [1]}]}, "name"),
    ],
)
def test_a_manifest_is_as_strict_as_the_messages_that_carry_it(
    change: dict[str, object], named: str
) -> None:
    """It travels inside the desired state: the same no-coercion, finite, 64-bit, NUL-free rules."""
    signed = sign(MANIFEST, Ed25519PrivateKey.generate()).model_dump(mode="json")
    signed["manifest"].update(change)
    with pytest.raises(ValidationError) as error:
        SignedManifest.model_validate_json(json.dumps(signed))
    assert named in str(error.value)


def test_a_golden_output_of_integers_is_read_as_floats() -> None:
    """JSON has one number type (and PostgreSQL's jsonb writes 1e20 back as an integer)."""
    manifest = MANIFEST.model_copy(update={"golden_output": [0.5, 2.0]})
    data = canonical_bytes(manifest).replace(b"[0.5,2.0]", b"[0.5,2]")
    assert ModelManifest.model_validate_json(data).golden_output == [0.5, 2.0]
