"""What the pipelines run on: each model (sha256, signature, loaded and self-tested) and each
source (it yields a first reading), with the agent's own code.

A configured model is loaded as the agent loads it (``load_model``: the sha256 a manifest
gives is checked, a warm-up inference runs). A version the updater installed is checked as
after a restart (``Installer.reload``: signature, sha256, load) and run on its manifest's
golden input (``self_test``). A source is built by the registry and read until its first
sample, within the timeout; the reason it gives none is what it logs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

from pydantic import ValidationError

from edge_agent.config import AgentConfig
from edge_agent.doctor.check import Check
from edge_agent.inference.slot import LoadedModel, load_model, resolve_model
from edge_agent.pipelines.config import PipelineConfig
from edge_agent.sources.registry import SOURCE_TYPES, ReadingSourceType
from edge_agent.updates.installer import Fit, Installer, RefusedError, self_test
from edge_agent.updates.store import MANIFEST_FILE, STATE_FILE, Store
from shared.errors import AiotError
from shared.signing import SignedManifest


def model_checks(config: AgentConfig) -> list[Check]:
    """Each pipeline's configured model, and the version the updater installed for it."""
    checks = []
    for pipeline in config.pipelines:
        name = f"model {pipeline.name}"
        try:
            model = load_model(resolve_model(pipeline.model), pipeline.runtime)
        except AiotError as exc:
            fix = "restore the model file (reinstall it), or correct pipelines.*.model"
            checks.append(Check.failed(name, str(exc), fix))
            continue
        ref = model.ref
        checks.append(
            Check.passed(
                name,
                f"{ref.name} {ref.version} sha256 {ref.sha256[:12]}…, loaded, "
                "warm-up inference ran",
            )
        )
        installed = _installed_check(config, pipeline, model)
        if installed is not None:
            checks.append(installed)
    return checks


def _installed_check(
    config: AgentConfig, pipeline: PipelineConfig, configured: LoadedModel
) -> Check | None:
    if config.cloud is None or not (config.updates_dir / STATE_FILE).exists():
        return None
    store = Store(config.updates_dir)
    active = store.state.pipelines.get(pipeline.name)
    if active is None or active.active is None:
        return None
    version = active.active
    name = f"model {pipeline.name} (installed {version.name} {version.version})"
    installer = Installer(config.cloud, config.updates, store, threading.Event())
    fit = Fit(pipeline.name, configured, pipeline.runtime)
    fix = "the updater falls back to the configured model; deploy the version again"
    try:
        model = installer.reload(fit, version)
        folder = store.folder(version.name, version.version)
        signed = SignedManifest.model_validate_json((folder / MANIFEST_FILE).read_bytes())
        self_test(model, signed.manifest)
    except (RefusedError, OSError, ValidationError) as exc:
        return Check.failed(name, str(exc), fix)
    return Check.passed(name, "signature and sha256 verified, loaded, self-test passed")


def source_checks(config: AgentConfig, *, timeout_s: float) -> list[Check]:
    """Each source yields a first reading (a frame, a window) within ``timeout_s``."""
    return [_source_check(pipeline, timeout_s) for pipeline in config.pipelines]


def _source_check(pipeline: PipelineConfig, timeout_s: float) -> Check:
    name = f"source {pipeline.name}"
    declared = SOURCE_TYPES[pipeline.source.type]
    logs = _Recorder()
    logger = logging.getLogger("edge_agent.sources")
    logger.addHandler(logs)
    stop = threading.Event()
    first: list[object] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            stream: Iterator[object]
            if isinstance(declared, ReadingSourceType):
                stream = declared.factory(pipeline.source).readings(stop)
            else:
                stream = declared.factory(pipeline.source).samples(stop)
            first.extend(item for item, _ in zip(stream, range(1), strict=False))
        except Exception as exc:  # any failure of the source is the finding
            errors.append(exc)

    thread = threading.Thread(target=read, name=f"doctor-{pipeline.name}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    stop.set()
    thread.join(timeout_s)
    logger.removeHandler(logs)
    kind = pipeline.source.type
    if first:
        return Check.passed(name, f"{kind}: a first reading arrived")
    why = str(errors[0]) if errors else (logs.last or f"nothing within {timeout_s:g} s")
    return Check.failed(
        name,
        f"{kind}: {why}",
        "check the device is on and reachable from "
        "this gateway (address, port, cable), then pipelines.*.source",
    )


class _Recorder(logging.Handler):
    """Keeps the last warning a source logged: why it gave nothing."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.last = record.getMessage()
