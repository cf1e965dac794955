"""The installer: from a desired entry to a loaded, self-tested model that fits its pipeline,
or a ``RefusedError`` that says why. Nothing here swaps: the old model serves throughout.

The checks run cheapest first. Before a byte is downloaded: the manifest's Ed25519 signature
(no key configured refuses everything) and its fit to the pipeline (task, labels). Then the
artifact is fetched (resumed across failures and restarts), its size and sha256 checked
against the signed manifest, loaded into a new ORT session (same input window and size as the
configured model, warmed up), and run on the manifest's golden input.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_agent.delivery.config import CloudConfig
from edge_agent.inference.config import RuntimeConfig
from edge_agent.inference.manifest import ModelSpec
from edge_agent.inference.slot import LoadedModel, file_sha256, load_model
from edge_agent.updates.config import UpdatesConfig
from edge_agent.updates.download import DownloadPolicy, download, part_path
from edge_agent.updates.store import MANIFEST_FILE, MODEL_FILE, Installed, Store
from shared.errors import AiotError, ConfigError, ContractError, ModelError, SignatureError
from shared.golden import check_golden, golden_input
from shared.messages import DesiredModel, UpdateState
from shared.signing import ModelManifest, SignedManifest, decode_public_key, verify

log = logging.getLogger(__name__)


class RefusedError(AiotError):
    """An update is refused before the swap; the message is the reason reported."""


@dataclass(frozen=True, slots=True)
class Fit:
    """What a version must match to serve a pipeline: the model its config names, and how it
    runs models."""

    pipeline: str
    configured: LoadedModel
    runtime: RuntimeConfig


class Installer:
    """Checks, fetches, loads and self-tests the versions the cloud asks for."""

    def __init__(
        self, cloud: CloudConfig, updates: UpdatesConfig, store: Store, stop: threading.Event
    ) -> None:
        self._base_url = cloud.base_url
        self._store = store
        self._stop = stop
        self._public_key, self._key_problem = read_public_key(cloud)
        self._policy = DownloadPolicy(
            timeout_s=updates.download_timeout_s,
            tries=updates.retries,
            backoff_s=updates.retry_backoff_s,
            username=cloud.username,
            password=read_password(cloud),
            tls=cloud.tls.files() if cloud.tls is not None else None,
        )

    def install(
        self,
        fit: Fit,
        entry: DesiredModel,
        phase: Callable[[UpdateState], None],
        between_samples: Callable[[], object] = lambda: None,
    ) -> LoadedModel:
        """The entry's model, ready to swap in; ``phase`` hears each step as it starts.
        ``between_samples`` returns when opening the session would not delay the pipeline's
        next sample (it holds the GIL throughout).

        Raises RefusedError, TransportError (the download failed, or ``stop`` was set) or
        OSError (the updates dir cannot store it).
        """
        manifest = entry.manifest.manifest
        phase("downloading")
        self._check_trusted(fit, entry.manifest)
        folder = self._store.folder(manifest.name, manifest.version)
        model_path = folder / MODEL_FILE
        if not (model_path.exists() and model_path.stat().st_size == manifest.size):
            url = self._base_url + entry.artifact_path
            try:
                download(url, model_path, size=manifest.size, policy=self._policy, stop=self._stop)
            except ContractError as exc:
                part_path(model_path).unlink(missing_ok=True)
                raise RefusedError(str(exc)) from None
        phase("verifying")
        self._check_artifact(model_path, manifest)
        (folder / MANIFEST_FILE).write_text(entry.manifest.model_dump_json(indent=1))
        phase("loading")
        between_samples()
        new = self._load(fit, model_path, manifest)
        phase("self_test")
        self_test(new, manifest)
        return new

    def reload(self, fit: Fit, active: Installed) -> LoadedModel:
        """A version installed before a restart, checked again as when it was installed.

        Raises RefusedError, OSError or pydantic's ValidationError (its manifest file).
        """
        folder = self._store.folder(active.name, active.version)
        signed = SignedManifest.model_validate_json((folder / MANIFEST_FILE).read_bytes())
        self._check_trusted(fit, signed)
        if signed.manifest.sha256 != active.sha256:
            raise RefusedError(f"{folder / MANIFEST_FILE} is not the active version's")
        self._check_artifact(folder / MODEL_FILE, signed.manifest)
        return self._load(fit, folder / MODEL_FILE, signed.manifest)

    def _check_trusted(self, fit: Fit, signed: SignedManifest) -> None:
        """Refuse before a byte is downloaded: no key, a bad signature, or a model that does
        not fit the pipeline."""
        if self._public_key is None:
            raise RefusedError(self._key_problem)
        try:
            manifest = verify(signed, self._public_key)
        except SignatureError as exc:
            raise RefusedError(str(exc)) from None
        configured = fit.configured
        task = "detection" if manifest.task == "detection" else "anomaly"
        if task != configured.task:
            raise RefusedError(
                f"{manifest.name} {manifest.version} is a {task} model, pipeline "
                f"{fit.pipeline} runs a {configured.task} model"
            )
        if tuple(manifest.labels) != configured.labels:
            raise RefusedError(
                f"labels of {manifest.name} {manifest.version} {manifest.labels} differ from "
                f"the pipeline's {list(configured.labels)}"
            )

    def _check_artifact(self, path: Path, manifest: ModelManifest) -> None:
        size = path.stat().st_size
        if size != manifest.size:
            _discard(path)
            raise RefusedError(
                f"the artifact has {size} bytes, the signed manifest says {manifest.size}"
            )
        sha256 = file_sha256(path)
        if sha256 != manifest.sha256:
            _discard(path)
            raise RefusedError(
                f"sha256 of the artifact ({sha256}) does not match the signed manifest "
                f"({manifest.sha256})"
            )

    def _load(self, fit: Fit, path: Path, manifest: ModelManifest) -> LoadedModel:
        configured = fit.configured
        spec = ModelSpec(
            manifest.name,
            manifest.version,
            path,
            configured.labels,
            configured.labels[configured.normal_index] if configured.normal_index >= 0 else None,
            task=configured.task,
            sha256=manifest.sha256,
        )
        try:
            new = load_model(spec, fit.runtime)
        except ModelError as exc:
            raise RefusedError(f"load: {exc}") from None
        if (new.window, new.input_hw) != (configured.window, configured.input_hw):
            raise RefusedError(
                f"{manifest.name} {manifest.version} takes input window {new.window} / size "
                f"{new.input_hw}, the pipeline feeds {configured.window} / {configured.input_hw}"
            )
        return new


def self_test(model: LoadedModel, manifest: ModelManifest) -> None:
    """Run the manifest's golden input through ``model``; RefusedError unless the output matches."""
    if manifest.golden_input is None or manifest.golden_output is None:
        return
    if not manifest.inputs:
        raise RefusedError("self-test: the manifest names no input")
    try:
        batch = golden_input(manifest.golden_input, manifest.inputs[0])
        output = model.runtime.run(batch)
        check_golden(manifest, output)
    except ContractError as exc:
        raise RefusedError(f"self-test: {exc}") from None
    except ModelError as exc:
        reason = str(exc)
        if not reason.startswith("self-test"):
            reason = f"self-test: {reason}"
        raise RefusedError(reason) from None


def read_public_key(cloud: CloudConfig) -> tuple[Ed25519PublicKey | None, str]:
    """The key manifests are verified with, or None and why every update will be refused."""
    text = cloud.public_key
    if text is None and cloud.public_key_file is not None:
        try:
            text = cloud.public_key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            problem = f"cannot read {cloud.public_key_file}: {exc.strerror}"
            log.error("%s; every model update will be refused", problem)
            return None, f"no public key to verify manifests: {problem}"
    if text is None:
        return None, (
            "no public key configured (cloud.public_key or cloud.public_key_file): "
            "the agent cannot verify manifests and refuses every update"
        )
    try:
        return decode_public_key(text), ""
    except SignatureError as exc:
        log.error("cloud public key: %s; every model update will be refused", exc)
        return None, f"the configured cloud public key is unusable: {exc}"


def read_password(cloud: CloudConfig) -> str | None:
    """The HTTP Basic password for downloads (ConfigError if it cannot be read)."""
    try:
        return cloud.read_password()
    except ConfigError as exc:
        raise ConfigError(f"cloud.{exc}") from None


def _discard(path: Path) -> None:
    """Remove a bad artifact, so the next entry for this version downloads it afresh."""
    path.unlink(missing_ok=True)
    part_path(path).unlink(missing_ok=True)
