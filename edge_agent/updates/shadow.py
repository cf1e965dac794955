"""Shadow evaluation on the edge: a candidate model beside a pipeline's serving model.

The cloud asks for it in the desired state (``DesiredShadow``). ``ShadowKeeper``, on the
updater's thread, installs the candidate exactly as an update (``Installer``: signature, fit,
download, size and sha256, load, self-test), refuses one whose input does not fit what the
pipeline feeds, and hangs a ``Shadow`` on the pipeline. The pipeline offers every input it
scored (one call next to the collector's offer); ``Shadow.offer`` takes ``share`` of them into
a bounded queue (full: dropped and counted) and returns at once, so the serving path never
waits. The shadow's own thread runs the candidate within its CPU budget (busy time over
elapsed time; over it, inputs are skipped and counted) and compares. Nothing the candidate
says becomes an event or an action: its scores only feed the figures and two private copies
of the pipeline's filter chain, which count the incidents each model would have started (on a
camera, where filters follow tracked objects, an incident is a run of frames with a detection).
When the window is over the shadow stops taking inputs, drains its queue and says
``complete``: the figures are final and the status is published.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy.typing as npt

from edge_agent.inference.slot import LoadedModel, ModelSlot
from edge_agent.pipelines.base import InferenceStats, RunSettings
from edge_agent.pipelines.config import VisionConfig
from edge_agent.pipelines.filters import Decision, build_engine
from edge_agent.updates.installer import Fit, Installer, RefusedError
from edge_agent.updates.shadow_figures import Agreement, Caller, percentiles, scorer
from shared.errors import ModelError, TransportError
from shared.messages import DesiredShadow, ModelRef, ShadowReport, ShadowState, utcnow

log = logging.getLogger(__name__)

QUEUE_SIZE = 256
"""Inputs waiting for the candidate; more are dropped (and counted), never waited for."""
FRAME_QUEUE_SIZE = 4
"""Camera frames waiting for the candidate (a frame is hundreds of KB, a window a few)."""
LATENCIES = 8192
"""Candidate inference times kept for the window's p50 and p99."""
_POLL_S = 0.05


@runtime_checkable
class ShadowHost(Protocol):
    """What a shadow needs of a pipeline: its model, settings, inference record and the hook."""

    shadow: Callable[[npt.NDArray[Any], float, str, float], None] | None

    @property
    def name(self) -> str: ...

    @property
    def slot(self) -> ModelSlot: ...

    @property
    def configured(self) -> RunSettings: ...

    def inference_stats(self) -> InferenceStats: ...


@dataclass(frozen=True, slots=True)
class ShadowTarget:
    """A pipeline a shadow may run beside: the pipeline, what an update must fit, and (cameras)
    the detector's thresholds, which the candidate decodes with too."""

    host: ShadowHost
    fit: Fit
    vision: VisionConfig | None = None


def fit_problem(serving: LoadedModel, candidate: LoadedModel) -> str | None:
    """Why ``candidate`` cannot see the inputs ``serving`` sees (None: it can)."""
    name = f"{candidate.ref.name} {candidate.ref.version}"
    if (serving.task == "detection") != (candidate.task == "detection"):
        return f"{name} ({candidate.task}) cannot shadow the pipeline's {serving.task} model"
    if serving.task == "detection":
        return None  # each detector letterboxes the frame to its own input
    if math.prod(candidate.input_shape) != math.prod(serving.input_shape):
        return (
            f"{name} takes input {list(candidate.input_shape)}, the pipeline feeds "
            f"{list(serving.input_shape)}"
        )
    return None


class Shadow:
    """One candidate beside one pipeline's serving model, for one window."""

    def __init__(
        self,
        host: ShadowHost,
        candidate: LoadedModel,
        plan: DesiredShadow,
        *,
        vision: VisionConfig | None = None,
        on_change: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._host, self._candidate, self._plan = host, candidate, plan
        serving = host.slot.current()
        self._callers = (Caller.of(serving, vision), Caller.of(candidate, vision))
        self._score = scorer(candidate, vision)
        camera = candidate.task == "detection"
        filters = host.configured.filters
        self._engines = None if camera else (build_engine(filters), build_engine(filters))
        self._in_alarm = (False, False)
        self._on_change, self._clock = on_change, clock
        self._queue: queue.Queue[tuple[npt.NDArray[Any], float, str, float]] = queue.Queue(
            FRAME_QUEUE_SIZE if camera else QUEUE_SIZE
        )
        self._share, self._credit = plan.share, 0.0
        self._open = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"shadow-{host.name}", daemon=True)
        self._state: ShadowState = "running"
        self._started_at = utcnow()
        self._ends_at = math.inf
        self._begun = 0.0
        self._busy_s = 0.0
        self.agreement = Agreement()
        self.seen = self.skipped_share = self.dropped = 0
        """Written by the pipeline's thread only."""
        self.skipped_budget = self.errors = self.alarms_serving = self.alarms_candidate = 0
        """Written by the shadow's thread only."""
        self._latencies: deque[float] = deque(maxlen=LATENCIES)

    def start(self) -> None:
        """Open the window and start the candidate's thread."""
        self._started_at = utcnow()
        self._begun = time.perf_counter()
        self._ends_at = self._clock() + self._plan.window_s
        self._open = True
        self._thread.start()

    def stop(self) -> None:
        """Stop now (the window may not be over); the pipeline must no longer offer."""
        self._open = False
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    @property
    def complete(self) -> bool:
        return self._state == "complete"

    def offer(self, window: npt.NDArray[Any], score: float, label: str, ts: float) -> None:
        """One input the serving model scored (``score``, most likely ``label``); returns at
        once. Called on the pipeline's thread."""
        if not self._open:
            return
        self.seen += 1
        self._credit += self._share
        if self._credit < 1.0:
            self.skipped_share += 1
            return
        self._credit -= 1.0
        try:
            self._queue.put_nowait((window.copy(), score, label, ts))
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._open and self._clock() >= self._ends_at:
                self._open = False  # no new inputs; what is queued is still compared
            try:
                item = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                if not self._open:
                    self._finish()
                    return
                continue
            try:
                self._compare(*item)
            except Exception:
                # A bug here must not end the agent, nor the serving path: say it, count it.
                self.errors += 1
                log.exception("shadow of pipeline %s: comparison failed", self._host.name)

    def _finish(self) -> None:
        self._state = "complete"
        report = self.report()
        log.info(
            "shadow of pipeline %s: %s %s complete after %d inputs (%d shadowed, %d agreed)",
            self._host.name, report.model.name, report.model.version, report.inputs_seen,
            report.inputs_shadowed, report.label_matches,
        )  # fmt: skip
        self._on_change()

    def _compare(self, window: npt.NDArray[Any], score: float, label: str, ts: float) -> None:
        if self._busy_s > self._plan.cpu_budget * (time.perf_counter() - self._begun):
            self.skipped_budget += 1
            return
        start = time.perf_counter()
        try:
            c_score, c_label = self._score(window)
        except (ModelError, ValueError) as exc:
            self.errors += 1
            if self.errors == 1:
                log.warning("shadow of pipeline %s: candidate failed: %s", self._host.name, exc)
            return
        finally:
            spent = time.perf_counter() - start
            self._busy_s += spent
        self._latencies.append(spent)
        seq = self.agreement.count
        serving_caller, candidate_caller = self._callers
        s_call, s_alarm = serving_caller.call(score, label)
        c_call, c_alarm = candidate_caller.call(c_score, c_label)
        self.agreement.add((score, s_call, s_alarm), (c_score, c_call, c_alarm))
        if self._engines is not None:
            self.alarms_serving += _starts(self._engines[0].step(ts, seq, score, label))
            self.alarms_candidate += _starts(self._engines[1].step(ts, seq, c_score, c_label))
        else:  # a camera: an incident is a run of frames in alarm
            was_serving, was_candidate = self._in_alarm
            self.alarms_serving += s_alarm and not was_serving
            self.alarms_candidate += c_alarm and not was_candidate
            self._in_alarm = (s_alarm, c_alarm)

    def report(self) -> ShadowReport:
        """The figures so far (final once ``complete``)."""
        a = self.agreement
        serving_p50, serving_p99 = percentiles(list(self._host.inference_stats().latencies))
        candidate_p50, candidate_p99 = percentiles(list(self._latencies))
        return ShadowReport(
            deployment_id=self._plan.model.deployment_id,
            model=self._candidate.ref,
            state=self._state,
            started_at=self._started_at,
            window_s=self._plan.window_s,
            inputs_seen=self.seen,
            inputs_shadowed=a.count,
            skipped_share=self.skipped_share,
            skipped_budget=self.skipped_budget,
            dropped_full=self.dropped,
            errors=self.errors,
            label_matches=a.label_matches,
            score_correlation=a.correlation(),
            serving_alarm_windows=a.serving_alarm_windows,
            candidate_alarm_windows=a.candidate_alarm_windows,
            serving_alarms=self.alarms_serving,
            candidate_alarms=self.alarms_candidate,
            serving_p50_s=serving_p50,
            serving_p99_s=serving_p99,
            candidate_p50_s=candidate_p50,
            candidate_p99_s=candidate_p99,
        )


def _starts(decision: Decision | None) -> int:
    """1 if a filter decision opens an incident (what would have been an alarm), else 0."""
    return int(decision is not None and decision.state in ("start", "instant"))


class ShadowKeeper:
    """The shadows the desired state asks for: installed, hung on their pipelines, reported,
    and taken down when the desired state no longer lists them. Runs on the updater's thread
    (``report`` on any)."""

    def __init__(
        self,
        installer: Installer,
        *,
        on_change: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._installer = installer
        self._on_change, self._clock = on_change, clock
        self._keys: dict[str, tuple[int | None, str]] = {}
        self._shadows: dict[str, tuple[ShadowHost, Shadow]] = {}
        self._reports: dict[str, ShadowReport] = {}
        """Shadows that do not run (installing or refused), by pipeline."""

    def reconcile(self, wanted: Sequence[DesiredShadow], hosts: Mapping[str, ShadowTarget]) -> None:
        """Start the shadows ``wanted`` lists anew, end those it no longer lists."""
        plans = {plan.model.pipeline: plan for plan in wanted}
        for name in list(self._keys):
            plan = plans.get(name)
            if plan is None or _key(plan) != self._keys[name]:
                self._end(name)
        for name, plan in plans.items():
            if name in self._keys:
                continue
            if name not in hosts:
                log.warning("desired shadow names pipeline %r, which this agent does not run", name)
                continue
            self._keys[name] = _key(plan)
            self._begin(hosts[name], plan)

    def report(self, pipeline: str) -> ShadowReport | None:
        """What ``pipeline``'s shadow reports (None: it runs none)."""
        running = self._shadows.get(pipeline)
        if running is not None:
            return running[1].report()
        return self._reports.get(pipeline)

    def stop(self) -> None:
        for name in list(self._keys):
            self._end(name)

    def _begin(self, target: ShadowTarget, plan: DesiredShadow) -> None:
        host = target.host
        name, manifest = host.name, plan.model.manifest.manifest
        self._set(name, plan, "installing")
        try:
            candidate = self._installer.install(target.fit, plan.model, lambda _state: None)
        except (RefusedError, TransportError) as exc:
            self._set(name, plan, "refused", str(exc))
            return
        except OSError as exc:
            self._set(name, plan, "refused", f"cannot store the candidate: {exc}")
            return
        problem = fit_problem(host.slot.current(), candidate)
        if problem is not None:
            self._set(name, plan, "refused", problem)
            return
        shadow = Shadow(
            host, candidate, plan, vision=target.vision, on_change=self._on_change,
            clock=self._clock,
        )  # fmt: skip
        self._reports.pop(name, None)
        self._shadows[name] = (host, shadow)
        shadow.start()
        host.shadow = shadow.offer
        log.info(
            "pipeline %s: shadows %s %s for %.0f s (share %g)", name, manifest.name,
            manifest.version, plan.window_s, plan.share,
        )  # fmt: skip
        self._on_change()

    def _end(self, name: str) -> None:
        self._keys.pop(name, None)
        self._reports.pop(name, None)
        running = self._shadows.pop(name, None)
        if running is not None:
            host, shadow = running
            host.shadow = None
            shadow.stop()
            log.info("pipeline %s: shadow ended", name)
        self._on_change()

    def _set(self, name: str, plan: DesiredShadow, state: ShadowState, reason: str = "") -> None:
        manifest = plan.model.manifest.manifest
        if state == "refused":
            log.error(
                "pipeline %s: refused shadow %s %s: %s", name, manifest.name, manifest.version,
                reason,
            )  # fmt: skip
        self._reports[name] = ShadowReport(
            deployment_id=plan.model.deployment_id,
            model=ModelRef(name=manifest.name, version=manifest.version, sha256=manifest.sha256),
            state=state,
            reason=reason[:512],
            window_s=plan.window_s,
        )
        self._on_change()


def _key(plan: DesiredShadow) -> tuple[int | None, str]:
    return plan.model.deployment_id, plan.model.manifest.manifest.sha256
