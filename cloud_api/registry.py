"""The model registry: validated ONNX artifacts in a store, each with a signed manifest.

An upload is copied to a temp file while counting (never held in memory), loaded with ONNX
Runtime to prove it is a model, to record its inputs and outputs and to compute its golden
self-test, hashed, signed with the cloud's Ed25519 key, moved into the artifact store and
recorded. A refusal writes nothing.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)
from pydantic import ValidationError
from sqlalchemy.orm import Session

from cloud_api import crud
from cloud_api.tables import ModelVersionRow
from shared.errors import ConfigError, ConflictError, ContractError, ModelError, TooLargeError
from shared.golden import golden_input, golden_reference, golden_sample
from shared.messages import utcnow
from shared.signing import ModelManifest, TensorSpec, sign

log = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""Names and versions: they become path segments, so no separators and no leading dot."""
CHUNK = 1024 * 1024
SIGNING_KEY_FILE = "signing-key.pem"
ARTIFACT_FILE = "model.onnx"

# ONNX Runtime's element type names, as numpy spells them in manifests.
_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
    "tensor(string)": "str",
}


def check_name(value: str, *, what: str) -> str:
    """``value`` if it is a safe name or version; ContractError naming the rule otherwise."""
    if not NAME_PATTERN.fullmatch(value):
        raise ContractError(
            f"{what} {value!r} is not allowed: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return value


class ArtifactStore(Protocol):
    """Where artifacts live, by a relative key of safe segments (``name/version/model.onnx``).

    The filesystem store is the default; an S3-compatible store can implement the same four
    methods.
    """

    def put(self, key: str, source: Path) -> None:
        """Take ``source`` (a finished temp file) as the artifact ``key``."""

    def get(self, key: str) -> bytes:
        """The whole artifact (small artifacts and tests only)."""

    def open(self, key: str) -> BinaryIO:
        """The artifact for streaming; the caller closes it."""

    def delete(self, key: str) -> None:
        """Remove the artifact if it exists."""


class FileArtifactStore:
    """Artifacts as files under ``root``; keys can never leave it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        """The file of ``key``; ContractError for a key that is not safe segments."""
        parts = key.split("/")
        for part in parts:
            check_name(part, what="artifact key segment")
        return self.root.joinpath(*parts)

    def put(self, key: str, source: Path) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        # A rename within one filesystem: readers never see half an artifact.
        os.replace(source, target)

    def get(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def open(self, key: str) -> BinaryIO:
        return self.path(key).open("rb")

    def delete(self, key: str) -> None:
        target = self.path(key)
        target.unlink(missing_ok=True)
        for parent in (target.parent, target.parent.parent):
            if parent != self.root and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()


def artifact_key(name: str, version: str) -> str:
    """Where a version's ONNX file is kept in the store."""
    check_name(name, what="model name")
    check_name(version, what="version")
    return f"{name}/{version}/{ARTIFACT_FILE}"


def load_or_create_signing_key(data_dir: Path) -> Ed25519PrivateKey:
    """The cloud's Ed25519 key from ``data_dir``, generated (file mode 0600) on first start."""
    path = data_dir / SIGNING_KEY_FILE
    if path.exists():
        try:
            key = load_pem_private_key(path.read_bytes(), password=None)
        except ValueError as exc:
            raise ConfigError(f"signing key {path} cannot be read: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"signing key {path} is not an Ed25519 key")
        return key
    data_dir.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    # Created with 0600 from the start: the key is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(pem)
    log.info("generated the model signing key in %s", path)
    return key


@contextmanager
def spooled_upload(source: BinaryIO, *, tmp_dir: Path, max_bytes: int) -> Iterator[Path]:
    """Copy ``source`` to a temp file in ``tmp_dir`` while counting; removed on exit.

    TooLargeError as soon as more than ``max_bytes`` arrive, without reading the rest.
    """
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=tmp_dir, suffix=".upload")
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            total = 0
            while chunk := source.read(CHUNK):
                total += len(chunk)
                if total > max_bytes:
                    raise TooLargeError(f"model is larger than the limit of {max_bytes} bytes")
                out.write(chunk)
        yield path
    finally:
        path.unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class Inspection:
    """What loading a model told us: its tensors and, when it has one, its golden self-test."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    golden_input: str | None
    golden_output: list[float] | None


def inspect_onnx(path: Path) -> Inspection:
    """Inputs, outputs and golden self-test of the model at ``path``.

    The golden self-test (``shared.golden``) is the first output of the model run on the
    golden input for its first input. A model whose first input is not float32 gets none
    (both None): golden inputs are float32 noise, and its agents skip the self-test. So does
    a model with more than one input (noise cannot stand for the meaning of the others).
    ModelError if ONNX Runtime cannot load the model, or a one-input float32 model cannot run
    its golden input (its agents could never pass the self-test).
    """
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own untyped errors for every kind of bad file
        # The reason goes back to the uploader: it must not show where the server keeps files.
        reason = _first_line(exc).replace(str(path), "the upload")
        raise ModelError(f"not a loadable ONNX model: {reason}") from None

    def specs(args: list[onnxruntime.NodeArg]) -> list[TensorSpec]:
        return [
            TensorSpec(name=arg.name, dtype=_DTYPES.get(arg.type, arg.type), shape=list(arg.shape))
            for arg in args
        ]

    try:
        inputs, outputs = specs(session.get_inputs()), specs(session.get_outputs())
    except ValidationError as exc:
        raise ModelError(
            f"model's inputs and outputs break the manifest's rules: {_first_error(exc)}"
        ) from None
    if len(inputs) != 1 or inputs[0].dtype != "float32" or not outputs:
        return Inspection(inputs, outputs, None, None)
    reference = golden_reference()
    first = inputs[0]
    try:
        output = session.run([outputs[0].name], {first.name: golden_input(reference, first)})[0]
    except Exception as exc:  # ORT's errors are untyped here too
        reason = _first_line(exc).replace(str(path), "the upload")
        raise ModelError(f"model cannot run its golden self-test input: {reason}") from None
    golden = golden_sample(output)
    if not all(math.isfinite(value) for value in golden):
        # Its agents' self-test refuses a non-finite output: it could never be installed.
        raise ModelError("model's output for the golden self-test input is not finite")
    return Inspection(inputs, outputs, reference, golden)


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False, include_input=False)[0]
    return f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"


def _first_line(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def register_model(
    session: Session,
    *,
    store: ArtifactStore,
    signing_key: Ed25519PrivateKey,
    name: str,
    version: str,
    source: BinaryIO,
    tmp_dir: Path,
    max_bytes: int,
    task: str = "",
    labels: list[str] | None = None,
) -> ModelVersionRow:
    """Validate, sign, store and record one model version; nothing is kept on refusal.

    Raises ContractError (bad name, version, task or labels), TooLargeError, ModelError (not
    ONNX, or a golden output that is not finite) or ConflictError (the version exists).
    """
    key = artifact_key(name, version)
    if crud.get_model_version(session, name=name, version=version) is not None:
        raise ConflictError(f"model {name} version {version} exists already")
    with spooled_upload(source, tmp_dir=tmp_dir, max_bytes=max_bytes) as path:
        inspection = inspect_onnx(path)
        inputs, outputs = inspection.inputs, inspection.outputs
        try:
            manifest = ModelManifest(
                name=name,
                version=version,
                sha256=sha256_of(path),
                size=path.stat().st_size,
                task=task,
                inputs=inputs,
                outputs=outputs,
                labels=labels or [],
                golden_input=inspection.golden_input,
                golden_output=inspection.golden_output,
            )
        except ValidationError as exc:  # the task or labels given with the upload
            raise ContractError(f"manifest refused: {_first_error(exc)}") from None
        signed = sign(manifest, signing_key)
        row = ModelVersionRow(
            name=name,
            version=version,
            sha256=manifest.sha256,
            size=manifest.size,
            task=task,
            inputs=[spec.model_dump(mode="json") for spec in inputs],
            outputs=[spec.model_dump(mode="json") for spec in outputs],
            labels=list(manifest.labels),
            manifest=signed.model_dump(mode="json"),
            created_at=utcnow(),
        )
        # The row is flushed first: the unique constraint picks one winner among concurrent
        # uploads of a version before anything is put in the store under its key.
        crud.add_model_version(session, row=row)
        try:
            store.put(key, path)
            session.commit()
        except BaseException:
            session.rollback()
            store.delete(key)
            raise
    log.info("registered model %s %s (sha256 %s)", name, version, manifest.sha256)
    return row
