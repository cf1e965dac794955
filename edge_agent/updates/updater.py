"""The updater: installs the model versions the cloud asks for, and takes back those that fail.

One thread per agent takes the cloud's ``DesiredState`` messages (the whole desired state:
only the newest matters) and reconciles every pipeline with it. A new version goes through
``downloading`` (signature checked first, then the artifact fetched and resumed across
failures and restarts), ``verifying`` (size and sha256 against the signed manifest),
``loading`` (a new ORT session, warmed up), ``self_test`` (the manifest's golden input), the
swap (``ModelSlot.swap``, between two inferences) and ``watching``: for the health window the
pipeline's inference errors and times are watched, and the previous model swapped back if the
new one fails. ``failed`` means refused before the swap (the old model never stopped),
``rolled_back`` means swapped and taken back. A refused entry is not tried again until it
changes (another deployment id or sha256). A pipeline the desired state does not list goes
back to the model of the agent's own config.

Versions live in ``<updates dir>/<model name>/<version>/`` (``model.onnx``, ``manifest.json``)
and ``state.json`` (written atomically) says per pipeline which downloaded version is active
and which update is pending, so that a restart loads the active version again (verified
again), rolls back an update that was being watched, and resumes a download.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import shutil
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, ValidationError

from edge_agent.config import AgentConfig, PipelineConfig, UpdatesConfig
from edge_agent.inference.manifest import ModelSpec
from edge_agent.inference.slot import LoadedModel, file_sha256, load_model
from edge_agent.pipeline import Pipeline
from edge_agent.updates.download import DownloadPolicy, download, part_path
from shared.errors import (
    AiotError,
    ConfigError,
    ContractError,
    ModelError,
    SignatureError,
    TransportError,
)
from shared.golden import check_golden, golden_input
from shared.messages import DesiredModel, DesiredState, UpdateState, UpdateStatus, utcnow
from shared.signing import ModelManifest, SignedManifest, decode_public_key, verify

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
MIN_LATENCY_SAMPLES = 5
"""Fewer inference times than this in a health window say nothing about the model's speed."""
_POLL_S = 0.1
_REFUSED_KEPT = 32
_SAFE_PART = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_REASON_MAX = 512


class RefusedError(AiotError):
    """An update is refused before the swap; the message is the reason reported."""


# -- the state file ---------------------------------------------------------------------------


class _Stored(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Installed(_Stored):
    """A downloaded version a pipeline runs (or ran before the active one)."""

    name: str
    version: str
    sha256: str
    deployment_id: int | None = None


class Pending(Installed):
    """An update under way, and how far it got."""

    phase: UpdateState


class PipelineUpdates(_Stored):
    """What the updater remembers of one pipeline across restarts."""

    active: Installed | None = None
    previous: Installed | None = None
    pending: Pending | None = None
    refused: list[str] = []
    """Keys (deployment id and sha256) of desired entries not to try again."""
    last: UpdateStatus | None = None


class UpdaterState(_Stored):
    pipelines: dict[str, PipelineUpdates] = {}


def read_state(path: Path) -> UpdaterState:
    """The state file, or an empty state if there is none (or it cannot be read)."""
    try:
        return UpdaterState.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return UpdaterState()
    except (OSError, ValidationError) as exc:
        log.error("ignoring unreadable update state %s: %s", path, exc)
        return UpdaterState()


def write_state(path: Path, state: UpdaterState) -> None:
    """Write the state file atomically: a crash leaves the old or the new one, never half."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as file:
        file.write(state.model_dump_json(indent=1).encode())
        file.flush()
        os.fsync(file.fileno())
    tmp.replace(path)


def entry_key(entry: DesiredModel) -> str:
    """What identifies a desired entry: a refused one is tried again only when this changes."""
    return f"{entry.deployment_id}:{entry.manifest.manifest.sha256}"


# -- the updater ------------------------------------------------------------------------------


@dataclass(slots=True)
class UpdateCounters:
    """Outcomes since the agent started (for metrics)."""

    outcomes: dict[str, int] = field(
        default_factory=lambda: {"running": 0, "failed": 0, "rolled_back": 0}
    )
    swaps: int = 0
    refused_messages: int = 0
    last_refusal: str = ""


@dataclass(slots=True)
class _Target:
    pipeline: Pipeline
    config: PipelineConfig
    configured: LoadedModel


@dataclass(slots=True)
class _Watch:
    entry: DesiredModel
    new: LoadedModel
    previous: LoadedModel
    deadline: float
    errors_mark: int
    calls_mark: int
    baseline_s: float
    """The previous model's median inference time per window (0 if unknown)."""


class Updater:
    """Installs, watches and rolls back model versions for an agent's pipelines."""

    def __init__(
        self,
        config: AgentConfig,
        pipelines: Sequence[Pipeline],
        *,
        on_change: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if config.cloud is None:
            raise ValueError("the updater needs the config's cloud section")
        self._cloud = config.cloud
        self._updates: UpdatesConfig = config.updates
        self._dir = config.updates_dir
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create updates.dir {self._dir}: {exc.strerror}") from None
        self._state_path = self._dir / STATE_FILE
        configs = {p.name: p for p in config.pipelines}
        self._targets = {p.name: _Target(p, configs[p.name], p.slot.current()) for p in pipelines}
        self._on_change = on_change
        self._clock = clock
        self._public_key, self._key_problem = self._read_public_key()
        self._policy = DownloadPolicy(
            timeout_s=self._updates.download_timeout_s,
            tries=self._updates.retries,
            backoff_s=self._updates.retry_backoff_s,
            username=self._cloud.username,
            password=self._read_password(),
        )
        self._state = read_state(self._state_path)
        self._inbox: queue.SimpleQueue[DesiredState] = queue.SimpleQueue()
        self._desired: DesiredState | None = None
        self._watches: dict[str, _Watch] = {}
        self._calls_at_swap: dict[str, int] = {p.name: 0 for p in pipelines}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="updater", daemon=True)
        self.counters = UpdateCounters()

    # -- the agent's side --------------------------------------------------------------------

    def restore(self) -> None:
        """Before the pipelines run: load the versions installed before a restart, and settle
        updates the restart interrupted."""
        for name, target in self._targets.items():
            ps = self._pipeline_state(name)
            pending = ps.pending
            if pending is not None and pending.phase == "watching":
                ps.refused = [*ps.refused, f"{pending.deployment_id}:{pending.sha256}"]
                ps.last = self._status(
                    pending.deployment_id, pending.name, pending.version, "rolled_back",
                    "interrupted by a restart during the health window",
                )  # fmt: skip
                self.counters.outcomes["rolled_back"] += 1
                log.warning(
                    "pipeline %s: %s %s was in its health window when the agent stopped; "
                    "rolled back", name, pending.name, pending.version,
                )  # fmt: skip
            ps.pending = None  # a download resumes when the retained desired state comes again
            if ps.active is not None:
                self._restore_active(target, ps)
        self._save()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop at the next step; a health window under way is rolled back on the next start."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def submit(self, desired: DesiredState) -> None:
        """Hand over a desired state (any thread; returns at once)."""
        self.counters.last_refusal = ""  # a valid state replaced the refused one
        self._inbox.put(desired)

    def refuse_message(self, reason: str) -> None:
        """Count a desired-state message that did not validate (the uplink's report)."""
        self.counters.refused_messages += 1
        self.counters.last_refusal = reason
        self._on_change()

    def status(self, pipeline: str) -> UpdateStatus | None:
        """The last update of ``pipeline``, as its status reports it."""
        ps = self._state.pipelines.get(pipeline)
        return ps.last if ps is not None else None

    # -- the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            latest: DesiredState | None = None
            try:
                latest = self._inbox.get(timeout=_POLL_S)
                while True:
                    latest = self._inbox.get_nowait()
            except queue.Empty:
                pass
            if latest is not None:
                self._desired = latest
            try:
                if latest is not None:
                    self._reconcile()
                if self._watches and self._check_watches():
                    self._reconcile()  # what arrived during a health window gets its turn now
            except Exception:
                # A bug must not end model updates for good (nor the agent): say it, go on.
                log.exception("model updater step failed")

    def _reconcile(self) -> None:
        desired = self._desired
        if desired is None:
            return
        entries = {e.pipeline: e for e in desired.pipelines}
        for unknown in sorted(set(entries) - set(self._targets)):
            log.warning("desired state names pipeline %r, which this agent does not run", unknown)
        for name, target in self._targets.items():
            if self._stop.is_set():
                return
            if name not in self._watches:
                self._apply(target, entries.get(name))

    def _apply(self, target: _Target, entry: DesiredModel | None) -> None:
        name = target.pipeline.name
        ps = self._pipeline_state(name)
        current = target.pipeline.slot.current()
        if entry is None:
            if current is not target.configured:
                self._back_to_configured(target, ps)
            return
        manifest = entry.manifest.manifest
        if manifest.sha256 == current.ref.sha256:
            if ps.active is not None and ps.active.sha256 == manifest.sha256:
                ps.active.deployment_id = entry.deployment_id
            last = ps.last
            if last is None or (last.state, last.deployment_id) != ("running", entry.deployment_id):
                self._report(name, entry, "running")
            return
        if entry_key(entry) in ps.refused:
            return
        for part in (manifest.name, manifest.version):
            if not _SAFE_PART.fullmatch(part) or part in (".", ".."):
                safe = entry.model_copy(update={"manifest": _renamed(entry.manifest)})
                reason = f"model name or version {part!r} cannot name a directory"
                self._refuse(name, safe, reason)
                return
        try:
            self._install(target, entry)
        except RefusedError as exc:
            self._refuse(name, entry, str(exc))
        except TransportError as exc:
            if self._stop.is_set():
                return  # interrupted by stop: the download resumes on the next start
            self._refuse(name, entry, str(exc))
        except OSError as exc:
            self._refuse(name, entry, f"cannot store the model under {self._dir}: {exc}")

    # -- one update ---------------------------------------------------------------------------

    def _install(self, target: _Target, entry: DesiredModel) -> None:
        name = target.pipeline.name
        manifest = entry.manifest.manifest
        self._report(name, entry, "downloading", phase="downloading")
        self._check_trusted(target, entry.manifest)
        folder = self._dir / manifest.name / manifest.version
        model_path = folder / MODEL_FILE
        if not (model_path.exists() and model_path.stat().st_size == manifest.size):
            url = self._cloud.base_url + entry.artifact_path
            try:
                download(url, model_path, size=manifest.size, policy=self._policy, stop=self._stop)
            except ContractError as exc:
                part_path(model_path).unlink(missing_ok=True)
                raise RefusedError(str(exc)) from None
        self._report(name, entry, "verifying", phase="verifying")
        self._check_artifact(model_path, manifest)
        (folder / MANIFEST_FILE).write_text(entry.manifest.model_dump_json(indent=1))
        self._report(name, entry, "loading", phase="loading")
        new = self._load(target, model_path, manifest)
        self._report(name, entry, "self_test", phase="self_test")
        self_test(new, manifest)
        counters = target.pipeline.counters
        errors, calls = counters.inference_errors, counters.inference_calls
        # The running model's times only (since its swap), not those of a model before it.
        since_swap = calls - self._calls_at_swap[name]
        baseline = _median(target.pipeline.inference_log.latencies, since_swap)
        watch = _Watch(
            entry=entry,
            new=new,
            previous=self._swap(target, new),
            deadline=self._clock() + self._updates.health_window_s,
            errors_mark=errors,
            calls_mark=calls,
            baseline_s=baseline,
        )
        log.info(
            "pipeline %s: swapped %s %s for %s %s; watching for %.0f s", name,
            watch.previous.ref.name, watch.previous.ref.version, manifest.name, manifest.version,
            self._updates.health_window_s,
        )  # fmt: skip
        self._watches[name] = watch
        self._report(name, entry, "watching", phase="watching")

    def _check_trusted(self, target: _Target, signed: SignedManifest) -> None:
        """Refuse before a byte is downloaded: no key, a bad signature, or a model that does
        not fit the pipeline."""
        if self._public_key is None:
            raise RefusedError(self._key_problem)
        try:
            manifest = verify(signed, self._public_key)
        except SignatureError as exc:
            raise RefusedError(str(exc)) from None
        configured = target.configured
        task = "detection" if manifest.task == "detection" else "anomaly"
        if task != configured.task:
            raise RefusedError(
                f"{manifest.name} {manifest.version} is a {task} model, pipeline "
                f"{target.pipeline.name} runs a {configured.task} model"
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

    def _load(self, target: _Target, path: Path, manifest: ModelManifest) -> LoadedModel:
        configured = target.configured
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
            new = load_model(spec, target.config.runtime)
        except ModelError as exc:
            raise RefusedError(f"load: {exc}") from None
        if (new.window, new.input_hw) != (configured.window, configured.input_hw):
            raise RefusedError(
                f"{manifest.name} {manifest.version} takes input window {new.window} / size "
                f"{new.input_hw}, the pipeline feeds {configured.window} / {configured.input_hw}"
            )
        return new

    # -- health windows ------------------------------------------------------------------------

    def _check_watches(self) -> bool:
        """Settle the health windows that are over; True if one ended."""
        ended = False
        for name, watch in list(self._watches.items()):
            verdict = self._verdict(self._targets[name].pipeline, watch)
            if verdict is None:
                continue
            ended = True
            del self._watches[name]
            ok, reason = verdict
            if ok:
                self._succeeded(self._targets[name], watch)
            else:
                self._roll_back(self._targets[name], watch, reason)
        return ended

    def _verdict(self, pipeline: Pipeline, watch: _Watch) -> tuple[bool, str] | None:
        """(healthy, reason) once the window's outcome is known, None while it is not."""
        errors = pipeline.counters.inference_errors - watch.errors_mark
        if errors > self._updates.max_errors:
            first = next(
                (msg for n, msg in pipeline.inference_log.errors if n > watch.errors_mark), ""
            )
            return False, f"{errors} inference errors in the health window: {first}"
        if self._clock() < watch.deadline:
            return None
        calls = pipeline.counters.inference_calls - watch.calls_mark
        latencies = pipeline.inference_log.latencies
        median = _median(latencies, min(calls, len(latencies)))
        limit = max(
            self._updates.max_latency_factor * watch.baseline_s,
            self._updates.latency_floor_ms / 1e3,
        )
        if calls >= MIN_LATENCY_SAMPLES and watch.baseline_s > 0 and median > limit:
            return False, (
                f"median inference time {median * 1e3:.3g} ms per window in the health window "
                f"is over {self._updates.max_latency_factor:g} x the previous model's "
                f"{watch.baseline_s * 1e3:.3g} ms"
            )
        return True, ""

    def _succeeded(self, target: _Target, watch: _Watch) -> None:
        name, manifest = target.pipeline.name, watch.entry.manifest.manifest
        ps = self._pipeline_state(name)
        ps.previous = ps.active
        ps.active = Installed(
            name=manifest.name,
            version=manifest.version,
            sha256=manifest.sha256,
            deployment_id=watch.entry.deployment_id,
        )
        self._prune(manifest.name)  # before "running" is said: then the disk is as reported
        self.counters.outcomes["running"] += 1
        self._report(name, watch.entry, "running")

    def _roll_back(self, target: _Target, watch: _Watch, reason: str) -> None:
        name, manifest = target.pipeline.name, watch.entry.manifest.manifest
        if target.pipeline.slot.current() is watch.new:
            self._swap(target, watch.previous)
        log.error(
            "pipeline %s: %s %s rolled back to %s %s: %s", name, manifest.name, manifest.version,
            watch.previous.ref.name, watch.previous.ref.version, reason,
        )  # fmt: skip
        self._refuse(name, watch.entry, reason, state="rolled_back")

    def _back_to_configured(self, target: _Target, ps: PipelineUpdates) -> None:
        """The desired state no longer lists the pipeline: run the config's model again."""
        previous = self._swap(target, target.configured)
        ref = target.configured.ref
        log.info(
            "pipeline %s: back to the configured model %s %s (was %s %s)", target.pipeline.name,
            ref.name, ref.version, previous.ref.name, previous.ref.version,
        )  # fmt: skip
        ps.previous, ps.active = ps.active, None
        ps.pending = None
        ps.last = self._status(None, ref.name, ref.version, "running")
        self._save()
        self._on_change()

    # -- restart -------------------------------------------------------------------------------

    def _restore_active(self, target: _Target, ps: PipelineUpdates) -> None:
        active = ps.active
        assert active is not None
        folder = self._dir / active.name / active.version
        try:
            signed = SignedManifest.model_validate_json((folder / MANIFEST_FILE).read_bytes())
            self._check_trusted(target, signed)
            if signed.manifest.sha256 != active.sha256:
                raise RefusedError(f"{folder / MANIFEST_FILE} is not the active version's")
            self._check_artifact(folder / MODEL_FILE, signed.manifest)
            new = self._load(target, folder / MODEL_FILE, signed.manifest)
        except (OSError, ValidationError, RefusedError) as exc:
            log.error(
                "pipeline %s: cannot load the installed %s %s again, running the configured "
                "model: %s", target.pipeline.name, active.name, active.version, exc,
            )  # fmt: skip
            ps.last = self._status(
                active.deployment_id, active.name, active.version, "failed",
                f"installed version cannot be loaded again after a restart: {exc}",
            )  # fmt: skip
            ps.active = None
            return
        self._swap(target, new)
        log.info(
            "pipeline %s: runs the installed %s %s", target.pipeline.name, active.name,
            active.version,
        )  # fmt: skip

    def _swap(self, target: _Target, model: LoadedModel) -> LoadedModel:
        """Swap ``model`` in (between two inferences); return the model it replaced."""
        previous = target.pipeline.slot.swap(model)
        self._calls_at_swap[target.pipeline.name] = target.pipeline.counters.inference_calls
        self.counters.swaps += 1
        return previous

    # -- bookkeeping ---------------------------------------------------------------------------

    def _refuse(
        self, name: str, entry: DesiredModel, reason: str, *, state: UpdateState = "failed"
    ) -> None:
        ps = self._pipeline_state(name)
        ps.refused = [*ps.refused, entry_key(entry)][-_REFUSED_KEPT:]
        if state == "failed":
            manifest = entry.manifest.manifest
            log.error(
                "pipeline %s: refused %s %s: %s", name, manifest.name, manifest.version, reason
            )
        self.counters.outcomes[state] += 1
        self._report(name, entry, state, reason)

    def _report(
        self,
        name: str,
        entry: DesiredModel,
        state: UpdateState,
        reason: str = "",
        *,
        phase: UpdateState | None = None,
    ) -> None:
        """Record a state change, persist it and have the status published now."""
        manifest = entry.manifest.manifest
        ps = self._pipeline_state(name)
        ps.last = self._status(entry.deployment_id, manifest.name, manifest.version, state, reason)
        ps.pending = (
            None
            if phase is None
            else Pending(
                name=manifest.name,
                version=manifest.version,
                sha256=manifest.sha256,
                deployment_id=entry.deployment_id,
                phase=phase,
            )
        )
        self._save()
        self._on_change()

    @staticmethod
    def _status(
        deployment_id: int | None, name: str, version: str, state: UpdateState, reason: str = ""
    ) -> UpdateStatus:
        if len(reason) > _REASON_MAX:
            reason = reason[: _REASON_MAX - 3] + "..."
        return UpdateStatus(
            deployment_id=deployment_id,
            name=name,
            version=version,
            state=state,
            reason=reason,
            ts=utcnow(),
        )

    def _pipeline_state(self, name: str) -> PipelineUpdates:
        return self._state.pipelines.setdefault(name, PipelineUpdates())

    def _save(self) -> None:
        try:
            write_state(self._state_path, self._state)
        except OSError as exc:
            log.error("cannot write the update state %s: %s", self._state_path, exc)

    def _prune(self, model_name: str) -> None:
        """Keep the newest ``keep_versions`` versions of a model, and every version in use."""
        folder = self._dir / model_name
        in_use = {
            i.version
            for ps in self._state.pipelines.values()
            for i in (ps.active, ps.previous, ps.pending)
            if i is not None and i.name == model_name
        }
        versions = sorted(
            (d for d in folder.iterdir() if d.is_dir()),
            key=lambda d: d.stat().st_mtime,
            reverse=True,
        )
        keep = self._updates.keep_versions
        for old in versions[keep:]:
            if old.name not in in_use:
                shutil.rmtree(old, ignore_errors=True)
                log.info("removed model %s %s (keeping %d versions)", model_name, old.name, keep)

    def _read_public_key(self) -> tuple[Ed25519PublicKey | None, str]:
        cloud = self._cloud
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

    def _read_password(self) -> str | None:
        path = self._cloud.password_file
        if path is None:
            return None
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read cloud.password_file {path}: {exc.strerror}") from None


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


def _median(values: Sequence[float], last: int) -> float:
    """The median of the ``last`` newest values (0 if there are none)."""
    if last <= 0:
        return 0.0
    return float(statistics.median(list(values)[-last:]))


def _renamed(signed: SignedManifest) -> SignedManifest:
    """``signed`` with a name and version a status can carry (to report its refusal)."""

    def safe(text: str) -> str:
        cleaned = re.sub(r"[^A-Za-z0-9_.:-]", "_", text)[:64]
        return "_" if cleaned in ("", ".", "..") else cleaned

    manifest = signed.manifest
    renamed = manifest.model_copy(
        update={"name": safe(manifest.name), "version": safe(manifest.version)}
    )
    return signed.model_copy(update={"manifest": renamed})


def _discard(path: Path) -> None:
    """Remove a bad artifact, so the next entry for this version downloads it afresh."""
    path.unlink(missing_ok=True)
    part_path(path).unlink(missing_ok=True)
