"""The updater: installs the model versions the cloud asks for, and takes back those that fail.

One thread per agent takes the cloud's ``DesiredState`` messages (the whole desired state:
only the newest matters) and reconciles every pipeline with it. A new version goes through
``downloading``, ``verifying``, ``loading`` and ``self_test`` (``installer``), the swap
(``ModelSlot.swap``, between two inferences) and ``watching`` (``health_watch``): if the new
model fails its health window, the previous one is swapped back. ``failed`` means refused
before the swap (the old model never stopped), ``rolled_back`` means swapped and taken back.
A refused entry is not tried again until it changes (another deployment id or sha256). A
pipeline the desired state does not list goes back to the model of the agent's own config.
What survives a restart is kept by ``store``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import get_args

from pydantic import ValidationError

from edge_agent.config import AgentConfig
from edge_agent.inference.slot import LoadedModel
from edge_agent.updates.health_watch import HealthWatch, ServingPipeline, Watch
from edge_agent.updates.installer import Fit, Installer, RefusedError
from edge_agent.updates.shadow import ShadowHost, ShadowKeeper, ShadowTarget
from edge_agent.updates.store import (
    Installed,
    Pending,
    PipelineUpdates,
    Store,
    entry_key,
    folder_problem,
    refusal_key,
    renamed,
)
from shared.errors import TransportError
from shared.messages import (
    DesiredModel,
    DesiredState,
    ShadowReport,
    UpdateOutcome,
    UpdateState,
    UpdateStatus,
    utcnow,
)

log = logging.getLogger(__name__)

_POLL_S = 0.1
GAP_WAIT_S = 1.0
"""How long an install waits for its pipeline to finish a sample before it opens the new
session anyway (``ServingPipeline.wait_for_gap``): a sensor window every 160 ms or a frame
every 100 ms leaves the 1.5-3 ms the session holds the GIL for between two samples."""
_REASON_MAX = 512


@dataclass(slots=True)
class UpdateCounters:
    """Outcomes since the agent started (for metrics)."""

    outcomes: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(get_args(UpdateOutcome), 0)
    )
    swaps: int = 0
    refused_messages: int = 0
    last_refusal: str = ""


@dataclass(frozen=True, slots=True)
class _Target:
    pipeline: ServingPipeline
    fit: Fit


class Updater:
    """Installs, watches and rolls back model versions for an agent's pipelines."""

    def __init__(
        self,
        config: AgentConfig,
        pipelines: Sequence[ServingPipeline],
        *,
        on_change: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if config.cloud is None:
            raise ValueError("the updater needs the config's cloud section")
        self._keep_versions = config.updates.keep_versions
        self._store = Store(config.updates_dir)
        self._stop = threading.Event()
        self._installer = Installer(config.cloud, config.updates, self._store, self._stop)
        runtimes = {p.name: p.runtime for p in config.pipelines}
        self._targets = {
            p.name: _Target(p, Fit(p.name, p.slot.current(), runtimes[p.name])) for p in pipelines
        }
        self._health = HealthWatch(config.updates, clock)
        self._shadows = ShadowKeeper(self._installer, on_change=on_change)
        visions = {p.name: p.vision for p in config.pipelines}
        self._hosts = {
            name: ShadowTarget(t.pipeline, t.fit, visions[name])
            for name, t in self._targets.items()
            if isinstance(t.pipeline, ShadowHost)
        }
        self._on_change = on_change
        self._inbox: queue.SimpleQueue[DesiredState] = queue.SimpleQueue()
        self._desired: DesiredState | None = None
        self._thread = threading.Thread(target=self._run, name="updater", daemon=True)
        self.counters = UpdateCounters()

    def restore(self) -> None:
        """Before the pipelines run: load the versions installed before a restart, and settle
        updates the restart interrupted."""
        for name, target in self._targets.items():
            ps = self._store.pipeline(name)
            pending = ps.pending
            if pending is not None and pending.phase == "watching":
                ps.refuse(refusal_key(pending.deployment_id, pending.sha256))
                ps.last = _status(
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
                self._restore_active(target, ps, ps.active)
        self._store.save()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop at the next step; a health window under way is rolled back on the next start."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._shadows.stop()

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
        return self._store.last(pipeline)

    def shadow(self, pipeline: str) -> ShadowReport | None:
        """What ``pipeline``'s shadow candidate reports (None: it runs none)."""
        return self._shadows.report(pipeline)

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
                if self._settle_watches():
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
            if not self._health.watching(name):
                self._apply(target, entries.get(name))
        self._shadows.reconcile(desired.shadows, self._hosts)

    def _apply(self, target: _Target, entry: DesiredModel | None) -> None:
        name = target.pipeline.name
        ps = self._store.pipeline(name)
        current = target.pipeline.slot.current()
        if entry is None:
            if current is not target.fit.configured:
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
        problem = folder_problem(manifest)
        if problem is not None:
            safe = entry.model_copy(update={"manifest": renamed(entry.manifest)})
            self._refuse(name, safe, problem)  # under names a status can carry
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
            self._refuse(name, entry, f"cannot store the model under {self._store.root}: {exc}")

    def _install(self, target: _Target, entry: DesiredModel) -> None:
        """Install ``entry``, swap it in and open its health window."""
        pipeline = target.pipeline
        manifest = entry.manifest.manifest

        def phase(state: UpdateState) -> None:
            self._report(pipeline.name, entry, state, phase=state)

        new = self._installer.install(
            target.fit, entry, phase, partial(pipeline.wait_for_gap, GAP_WAIT_S)
        )
        marks = self._health.marks(pipeline)  # the old model's record, before the swap
        previous = self._swap(target, new)
        self._health.start(pipeline, entry, new, previous, marks)
        log.info(
            "pipeline %s: swapped %s %s for %s %s; watching for %.0f s", pipeline.name,
            previous.ref.name, previous.ref.version, manifest.name, manifest.version,
            self._health.window_s,
        )  # fmt: skip
        phase("watching")

    def _settle_watches(self) -> bool:
        """Act on the health windows that are over; True if one ended."""
        ended = self._health.ended()
        for watch, verdict in ended:
            target = self._targets[watch.pipeline.name]
            if verdict.healthy:
                self._succeeded(target, watch)
            else:
                self._roll_back(target, watch, verdict.reason)
        return bool(ended)

    def _succeeded(self, target: _Target, watch: Watch) -> None:
        name, manifest = target.pipeline.name, watch.entry.manifest.manifest
        ps = self._store.pipeline(name)
        ps.previous = ps.active
        ps.active = Installed(
            name=manifest.name,
            version=manifest.version,
            sha256=manifest.sha256,
            deployment_id=watch.entry.deployment_id,
        )
        # Before "running" is said: then the disk is as reported.
        self._store.prune(manifest.name, self._keep_versions)
        self.counters.outcomes["running"] += 1
        self._report(name, watch.entry, "running")

    def _roll_back(self, target: _Target, watch: Watch, reason: str) -> None:
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
        previous = self._swap(target, target.fit.configured)
        ref = target.fit.configured.ref
        log.info(
            "pipeline %s: back to the configured model %s %s (was %s %s)", target.pipeline.name,
            ref.name, ref.version, previous.ref.name, previous.ref.version,
        )  # fmt: skip
        ps.previous, ps.active = ps.active, None
        ps.pending = None
        ps.last = _status(None, ref.name, ref.version, "running")
        self._store.save()
        self._on_change()

    def _restore_active(self, target: _Target, ps: PipelineUpdates, active: Installed) -> None:
        try:
            new = self._installer.reload(target.fit, active)
        except (OSError, ValidationError, RefusedError) as exc:
            log.error(
                "pipeline %s: cannot load the installed %s %s again, running the configured "
                "model: %s", target.pipeline.name, active.name, active.version, exc,
            )  # fmt: skip
            ps.last = _status(
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
        self._health.swapped(target.pipeline)
        self.counters.swaps += 1
        return previous

    def _refuse(
        self, name: str, entry: DesiredModel, reason: str, *, state: UpdateOutcome = "failed"
    ) -> None:
        self._store.pipeline(name).refuse(entry_key(entry))
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
        ps = self._store.pipeline(name)
        ps.last = _status(entry.deployment_id, manifest.name, manifest.version, state, reason)
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
        self._store.save()
        self._on_change()


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
