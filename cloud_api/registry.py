"""The model registry: validated ONNX artifacts in a store, each with a signed manifest.

An upload is copied to a temp file while counting (never held in memory), loaded with ONNX
Runtime by a child process with time and memory limits (``cloud_api.inspection``) to prove
it is a model, to record its inputs and outputs and to compute its golden self-test,
hashed, signed with the cloud's Ed25519 key, moved into the artifact store and recorded.
A refusal writes nothing.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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

from cloud_api.inspection import InspectionLimits, inspect_onnx
from cloud_api.queries.models import add_model_version, get_model_version
from cloud_api.tables import ModelVersionRow
from shared.digests import sha256_file
from shared.errors import ConfigError, ConflictError, ContractError, TooLargeError
from shared.messages import utcnow
from shared.signing import ModelManifest, SignedManifest, sign

log = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""Names and versions: they become path segments, so no separators and no leading dot."""
CHUNK = 1024 * 1024
MAX_TASK = 64
MAX_LABEL = 128
MAX_LABELS = 10_000
SIGNING_KEY_FILE = "signing-key.pem"
ARTIFACT_FILE = "model.onnx"


def check_name(value: str, *, what: str) -> str:
    """``value`` if it is a safe name or version; ContractError naming the rule otherwise."""
    if not NAME_PATTERN.fullmatch(value):
        raise ContractError(
            f"{what} {value!r} is not allowed: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return value


def check_text(value: str, *, what: str, max_length: int) -> str:
    """``value`` if it is at most ``max_length`` characters without NUL (which PostgreSQL
    refuses); ContractError naming ``what`` otherwise."""
    if len(value) > max_length or "\x00" in value:
        raise ContractError(f"{what} {value[:40]!r}: at most {max_length} characters, no NUL")
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
    """The cloud's Ed25519 key from ``data_dir``, generated (file mode 0600) on first start.

    API workers starting together may all find no key: each writes its own to a private temp
    file and links it into place, which only one link can do; the others read the winner's,
    whole (a link appears with its content), so every worker signs with the same key.
    """
    path = data_dir / SIGNING_KEY_FILE
    if path.exists():
        return _read_signing_key(path)
    data_dir.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    # mkstemp creates it 0600: the key is never readable by others, not even briefly.
    fd, name = tempfile.mkstemp(dir=data_dir, prefix=".signing-key-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(pem)
        os.link(name, path)
    except FileExistsError:
        return _read_signing_key(path)  # another worker's link came first
    finally:
        os.unlink(name)
    log.info("generated the model signing key in %s", path)
    return key


def _read_signing_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except ValueError as exc:
        raise ConfigError(f"signing key {path} cannot be read: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"signing key {path} is not an Ed25519 key")
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


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False, include_input=False)[0]
    return f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"


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
    limits: InspectionLimits | None = None,
    also: Callable[[], None] | None = None,
) -> ModelVersionRow:
    """Validate, sign, store and record one model version; nothing is kept on refusal.

    The model is inspected by a child process within ``limits`` (``cloud_api.inspection``)
    before anything is written; ``also`` writes more in the version's transaction (a training
    job's end), and what it raises undoes the version too. Raises ContractError (bad name,
    version, task or labels), TooLargeError, ModelError (not ONNX, no usable self-test, a
    golden output that is not finite, over the inspection's limits) or ConflictError (the
    version exists).
    """
    key = artifact_key(name, version)
    _check_details(task, labels or [])
    if get_model_version(session, name=name, version=version) is not None:
        raise ConflictError(f"model {name} version {version} exists already")
    with spooled_upload(source, tmp_dir=tmp_dir, max_bytes=max_bytes) as path:
        inspection = inspect_onnx(path, limits=limits)
        try:
            manifest = ModelManifest(
                name=name,
                version=version,
                sha256=sha256_file(path),
                size=path.stat().st_size,
                task=task,
                inputs=inspection.inputs,
                outputs=inspection.outputs,
                labels=labels or [],
                golden_input=inspection.golden_input,
                golden_output=inspection.golden_output,
            )
        except ValidationError as exc:  # the task or labels given with the upload
            raise ContractError(f"manifest refused: {_first_error(exc)}") from None
        row = _version_row(manifest, sign(manifest, signing_key))
        # The row is flushed first: the unique constraint picks one winner among concurrent
        # uploads of a version before anything is put in the store under its key.
        add_model_version(session, row=row)
        try:
            if also is not None:
                also()
            store.put(key, path)
            session.commit()
        except BaseException:
            session.rollback()
            store.delete(key)
            raise
    log.info("registered model %s %s (sha256 %s)", name, version, manifest.sha256)
    return row


def _check_details(task: str, labels: list[str]) -> None:
    """ContractError for a task or labels the manifest cannot hold."""
    check_text(task, what="task", max_length=MAX_TASK)
    if len(labels) > MAX_LABELS:
        raise ContractError(f"a model has at most {MAX_LABELS} labels, not {len(labels)}")
    for label in labels:
        check_text(label, what="label", max_length=MAX_LABEL)


def _version_row(manifest: ModelManifest, signed: SignedManifest) -> ModelVersionRow:
    """The registry's row of a signed version (not added to any session yet)."""
    return ModelVersionRow(
        name=manifest.name,
        version=manifest.version,
        sha256=manifest.sha256,
        size=manifest.size,
        task=manifest.task,
        inputs=[spec.model_dump(mode="json") for spec in manifest.inputs],
        outputs=[spec.model_dump(mode="json") for spec in manifest.outputs],
        labels=list(manifest.labels),
        manifest=signed.model_dump(mode="json"),
        created_at=utcnow(),
    )
