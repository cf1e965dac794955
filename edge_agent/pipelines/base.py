"""What every pipeline shares: a source, a model slot, a filter engine, counters, the run
loop, summaries and the way events leave (local actions first, then the outbox).

``SensorPipeline`` (``sensor.py``) and ``VisionPipeline`` (``vision.py``) say what one
sample does and how open events end. ``InferenceStats`` is the narrow view of a pipeline's
inference record that the updater's health watch reads from its own thread.

(Over 400 lines: the run loop and what every pipeline shares, collection and escalation
included, are one class.)
"""

from __future__ import annotations

import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from edge_agent.delivery.action_workers import Actions
from edge_agent.delivery.escalation import EscalationDesk, Escalator
from edge_agent.delivery.outbox_writer import OutboxWriter
from edge_agent.delivery.spool import Spool
from edge_agent.inference.slot import LoadedModel, ModelSlot
from edge_agent.pipelines.collect import CollectConfig, Collector, Encoder
from edge_agent.pipelines.config import PipelineConfig
from edge_agent.pipelines.filter_config import FilterStageConfig, default_filters
from edge_agent.pipelines.filters import FilterEngine, build_engine
from edge_agent.pipelines.summary import SummaryWindow
from edge_agent.sources.registry import build_source
from edge_agent.sources.sample import Sample, Source
from edge_agent.sources.windows import WindowConfig
from shared.errors import ConfigError, ModelError
from shared.messages import (
    Event,
    ModelRef,
    PipelineStatus,
    PipelineSummary,
    ShadowReport,
    UpdateStatus,
    new_event_id,
)

log = logging.getLogger(__name__)

ShadowOffer = Callable[[npt.NDArray[Any], float, str, float], None]
"""A shadow candidate's intake: (window, serving score, serving label, ts); returns at once."""
LATENCY_SAMPLES = 512
"""Inference times a pipeline remembers: enough for the median of a health window."""


@dataclass(slots=True)
class PipelineCounters:
    """What a pipeline has done since the agent started (reported in status and metrics)."""

    samples_in: int = 0
    inferences: int = 0
    events_out: int = 0
    errors: int = 0
    gated: int = 0
    raw_bytes: int = 0
    """Bytes read from the source (float32 windows: windows x values x 4)."""
    sent_bytes: int = 0
    """Encoded bytes handed to the outbox for the cloud: events and summaries."""
    inference_errors: int = 0
    """Samples whose inference or postprocessing failed (a part of ``errors``)."""
    inference_calls: int = 0
    """Timed ``session.run`` calls; the last LATENCY_SAMPLES times are in ``latencies``."""


class InferenceLog:
    """Recent inference times and errors, so the updater can judge a model it just swapped in.

    Appending to a bounded deque costs tens of nanoseconds; nothing is computed on the hot path.
    """

    __slots__ = ("errors", "latencies")

    def __init__(self) -> None:
        self.latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        """Seconds per window of the most recent inferences, oldest first."""
        self.errors: deque[tuple[int, str]] = deque(maxlen=16)
        """(the ``inference_errors`` count it made, message) of the most recent errors."""


@dataclass(frozen=True, slots=True)
class InferenceStats:
    """A pipeline's inference record at one moment: what a health window judges a model by."""

    calls: int
    """Timed ``session.run`` calls since the agent started."""
    errors: int
    """Samples whose inference or postprocessing failed since the agent started."""
    latencies: tuple[float, ...]
    """Seconds per window of the last calls (at most LATENCY_SAMPLES), oldest first."""
    recent_errors: tuple[tuple[int, str], ...]
    """(the ``errors`` count it made, message) of the most recent errors, oldest first."""


@dataclass(frozen=True, slots=True)
class RunSettings:
    """What of a pipeline may change while it runs (``edge_agent.remote_config``)."""

    filters: tuple[FilterStageConfig, ...]
    summary_interval_s: float
    collect: CollectConfig | None


class Pipeline(ABC):
    """What every pipeline shares: a source, a model slot, a filter engine, counters, the
    run loop, summaries and the way events leave (local actions, then the outbox).

    Subclasses say what one sample does (``process_sample``) and how open events end
    (``close``): ``SensorPipeline`` here, ``edge_agent.pipelines.vision.VisionPipeline`` for
    cameras.
    """

    def __init__(
        self,
        config: PipelineConfig,
        slot: ModelSlot,
        source: Source | None = None,
        *,
        actions: Actions | None = None,
        agent_id: str | None = None,
        clock: Callable[[], float] = time.time,
        spool: Spool | None = None,
        escalations: EscalationDesk | None = None,
    ):
        self.name = config.name
        self.slot = slot
        model = slot.current()
        self.source = (
            source if source is not None else build_source(config.source, _window(config, model))
        )
        self.counters = PipelineCounters()
        self.inference_log = InferenceLog()
        filters = config.filters
        if "filters" not in config.model_fields_set and model.threshold is not None:
            filters = default_filters(model.threshold)  # a scorer's calibrated threshold
        self.filters: FilterEngine = build_engine(filters)
        self.configured = RunSettings(tuple(filters), config.summary_interval_s, config.collect)
        """The settings of the config file (filters with a scorer's calibrated threshold)."""
        self._next_settings: RunSettings | None = None
        self._settings_lock = threading.Lock()
        self._gap = threading.Condition()  # wait_for_gap: a sample has just been processed
        self._gap_waiters = 0
        self._samples_done = 0
        self._actions = actions
        self._failing = False
        # Summaries name the agent: a pipeline built without one (benchmarks, unit tests)
        # still accumulates them but publishes none.
        self._agent_id = agent_id
        self._summary_s = config.summary_interval_s if agent_id is not None else 0.0
        self._clock = clock
        self._summary = SummaryWindow.starting(clock(), self.counters)
        self._next_event_seq = 0
        """The seq of the next event: gap-free for the agent's whole life (``run`` resumes it
        from the outbox, which stores it with the events)."""
        self._prepare(config)
        self._spool = spool
        self._encoder = self._sample_encoder(config)
        self.collector = self._collector(config.collect)
        """The ``collect:`` rules; None when off, or when the privacy policy lets nothing out."""
        self.escalator: Escalator | None = None
        """The ``escalate:`` band and budget; None when off (or built without an agent)."""
        if config.escalate is not None and escalations is not None and self._encoder is not None:
            self.escalator = escalations.escalator(config.escalate, self.name, self._encoder)
        # The hot path's whole cost outside the band: lo <= score <= hi (never true when off).
        self._esc_lo, self._esc_hi = (
            (self.escalator.lo, self.escalator.hi) if self.escalator else (math.inf, -math.inf)
        )
        self._late_lock = threading.Lock()
        self.shadow: ShadowOffer | None = None
        """Where a shadow candidate takes the inputs (``edge_agent.updates.shadow``); None: none."""

    def _collector(self, collect: CollectConfig | None) -> Collector | None:
        spool, encoder, agent_id = self._spool, self._encoder, self._agent_id
        if collect is None or spool is None or encoder is None or not agent_id:
            return None
        return Collector(
            collect, pipeline=self.name, agent_id=agent_id, spool=spool, encoder=encoder
        )

    @abstractmethod
    def _prepare(self, config: PipelineConfig) -> None:
        """What a kind of pipeline sets up once the shared parts exist (checks the model)."""

    @abstractmethod
    def _sample_encoder(self, config: PipelineConfig) -> Encoder | None:
        """How a kept input becomes samples; None if none may leave (cameras: ``never``)."""

    @abstractmethod
    def process_sample(self, sample: Sample) -> list[Event]:
        """Run one sample through the pipeline; return the events it makes. Raises ModelError."""

    @abstractmethod
    def close(self) -> list[Event]:
        """End open events because the stream ends; nothing if none is open."""

    def reconfigure(self, settings: RunSettings) -> None:
        """Run with ``settings`` from the next sample on (any thread may call this)."""
        with self._settings_lock:
            self._next_settings = settings

    def run(self, outbox: OutboxWriter, stop: threading.Event) -> None:
        """Process the source until it ends or ``stop`` is set, then close any open event.

        Events and summaries go to the outbox through its writer (``outbox``), which stores
        them off this thread. Every ``summary_interval_s`` (checked between two samples) a
        summary goes there, and a last one covers the rest when the run ends, so the
        summaries of a run add up to its counters; ``run`` returns once they are stored. New
        settings (``reconfigure``) are taken between two samples.
        """
        clock = self._clock
        self._take_settings()
        interval = self._summary_s
        due = clock() + interval if interval else math.inf
        self._resume(outbox)
        answers = self.escalator.answers if self.escalator is not None else None
        for sample in self.source.samples(stop):
            if self._next_settings is not None and self._take_settings():
                interval = self._summary_s
                due = min(due, clock() + interval) if interval else math.inf
            try:
                events = self.process_sample(sample)
            except (ModelError, ValidationError) as exc:
                # ValidationError: the model's output made an event the contract refuses
                # (a score beyond its bound): an inference error, never the pipeline's end.
                self._inference_failed(exc)
                continue
            if self._failing:
                self._failing = False
                log.info("pipeline %s: inference works again", self.name)
            if answers:  # the cloud's answers to escalations, reconciled
                events = self._with_answers(events)
            if events:
                self._emit(outbox, events)
            if clock() >= due:
                self._put_summary(outbox)
                due = clock() + interval
            self._samples_done += 1
            if self._gap_waiters:  # read without the lock: a missed sample is the next one
                with self._gap:
                    self._gap.notify_all()
        self._emit(outbox, self.close())
        if interval:
            outbox.flush()  # the last summary counts every event's bytes as sent
            self._put_summary(outbox)
        if self.escalator is not None:  # answers to come are emitted as they arrive
            self._emit_late(outbox, self.escalator.after_run(partial(self._answer, outbox)))
        outbox.flush()  # a run that ended has its last events and summary stored

    def _answer(self, outbox: OutboxWriter, event: Event) -> None:
        """A reconciled event that arrived after the run ended (on the uplink's thread)."""
        self._emit_late(outbox, [event])

    def _emit_late(self, outbox: OutboxWriter, events: list[Event]) -> None:
        with self._late_lock:  # the run has ended: only answers emit, maybe two at once
            self.counters.events_out += len(events)
            self._emit(outbox, events)

    def _emit_stored_answers(self, outbox: OutboxWriter) -> None:
        """Emit the answers to escalations a previous run stored and did not emit, when the
        pipeline no longer escalates (an escalator starts with them and emits them itself)."""
        if self.escalator is not None:
            return
        try:
            self._emit_late(outbox, outbox.outbox.answers(self.name))
        except ValidationError as exc:  # written by an agent of another version
            log.warning("pipeline %s: cannot read its stored answers: %s", self.name, exc)

    def _escalate(
        self,
        data: npt.NDArray[Any],
        score: float,
        label: str,
        ts: float,
        ref: ModelRef,
        events: Sequence[Event],
    ) -> None:
        """A window whose score is in the escalation band, with the events it made."""
        assert self.escalator is not None
        event_id = events[0].id if events else None
        self.escalator.offer(
            data, score, label, ts, ref, event_id=event_id, collector=self.collector
        )

    def _with_answers(self, events: list[Event]) -> list[Event]:
        assert self.escalator is not None
        answers = self.escalator.take_answers()
        self.counters.events_out += len(answers)
        return [*events, *answers]

    def _take_settings(self) -> bool:
        """Swap in the settings ``reconfigure`` left, if any; open events stay open."""
        with self._settings_lock:
            settings, self._next_settings = self._next_settings, None
        if settings is None:
            return False
        self.filters = self.filters.retuned(settings.filters)
        if self._agent_id is not None:
            self._summary_s = settings.summary_interval_s
        self.collector = self._collector(settings.collect)
        log.info("pipeline %s: runs with new settings", self.name)
        return True

    def status(
        self, update: UpdateStatus | None = None, shadow: ShadowReport | None = None
    ) -> PipelineStatus:
        """What the pipeline runs and did; ``update`` is its last model update and ``shadow``
        its shadow candidate's report (the updater's)."""
        c = self.counters
        model = self.slot.current()
        p50, p99 = _median_and_p99(self.inference_log.latencies)
        return PipelineStatus(
            name=self.name,
            model=model.ref,
            samples_in=c.samples_in,
            inferences=c.inferences,
            events_out=c.events_out,
            gated=c.gated,
            errors=c.errors,
            raw_bytes=c.raw_bytes,
            sent_bytes=c.sent_bytes,
            filtered=self.filters.counters.held_back,
            update=update,
            provider=model.runtime.provider,
            inference_p50_s=p50,
            inference_p99_s=p99,
            samples_kept=dict(self.collector.counters.kept) if self.collector else {},
            samples_capped=self.collector.counters.capped if self.collector else 0,
            spool_depth=self._spool.depth(self.name) if self._spool is not None else 0,
            **(self.escalator.counters.status() if self.escalator is not None else {}),
            shadow=shadow,
        )

    def wait_for_gap(self, timeout_s: float) -> bool:
        """Block until ``run`` has just finished a sample (True): work that holds the GIL for
        milliseconds (opening an ONNX Runtime session, 1.5-3 ms) then runs while the pipeline
        waits for its next sample, instead of delaying one. False after ``timeout_s`` without
        a sample (the pipeline is not running, or is slower than that)."""
        with self._gap:
            self._gap_waiters += 1
            done = self._samples_done
            try:
                return self._gap.wait_for(lambda: self._samples_done != done, timeout_s)
            finally:
                self._gap_waiters -= 1

    def inference_stats(self) -> InferenceStats:
        """A copy of the inference record (the updater reads it from its own thread)."""
        c, recent = self.counters, self.inference_log
        return InferenceStats(
            c.inference_calls, c.inference_errors, tuple(recent.latencies), tuple(recent.errors)
        )

    def _resume(self, outbox: OutboxWriter) -> None:
        """Continue the event seq where the last run stored it, emit the answers it stored
        and did not emit, and end the incidents that run left open (it died before their
        ``end``): each gets one now, ``closed_by`` restart, so no incident stays open forever."""
        self._next_event_seq = outbox.outbox.next_seq(self.name)
        self._emit_stored_answers(outbox)
        try:
            left_open = outbox.outbox.open_incidents(self.name)
        except ValidationError as exc:  # written by an older agent: end nothing, say so
            log.warning("pipeline %s: cannot read its open incidents: %s", self.name, exc)
            return
        if not left_open:
            return
        now = self._clock()
        ends = [restart_end(start, now) for start in left_open]
        log.info("pipeline %s: ended %d incident(s) the last run left open", self.name, len(ends))
        self.counters.events_out += len(ends)
        self._emit(outbox, ends)

    def _emit(self, outbox: OutboxWriter, events: list[Event]) -> None:
        """Number the events, then local actions first (they only queue, and act within
        milliseconds), then the durable outbox for the cloud."""
        if not events:
            return
        first = self._next_event_seq
        events = [e.model_copy(update={"seq": first + i}) for i, e in enumerate(events)]
        self._next_event_seq = first + len(events)
        if self._actions is not None:
            self._actions.submit(events)
        self._store(outbox, events)

    def _store(self, outbox: OutboxWriter, events: list[Event]) -> None:
        """Hand the events to the writer (it stores them, retrying a failed commit)."""
        outbox.put(events, self._stored)
        by_label = self._summary.events_by_label
        for event in events:
            by_label[event.label] += 1

    def _stored(self, size: int) -> None:
        """The writer stored ``size`` bytes of ours (called on its thread, the only one that
        adds to ``sent_bytes``)."""
        self.counters.sent_bytes += size

    def summarize(self) -> PipelineSummary:
        """Close the current summary window (it ends now) and return its summary."""
        if self._agent_id is None:
            raise RuntimeError(f"pipeline {self.name} has no agent id to put in a summary")
        return self._summary.close(
            end=self._clock(),
            counters=self.counters,
            agent_id=self._agent_id,
            pipeline=self.name,
            model=self.slot.current().ref,
        )

    def _put_summary(self, outbox: OutboxWriter) -> None:
        """Queue a summary behind the events.

        Its own size is counted once it is stored, so it lands in the next window's
        ``sent_bytes``: a message cannot carry its own length.
        """
        outbox.put_summary(self.summarize(), self._stored)

    def _timed(self, model: LoadedModel, batch: npt.NDArray[np.float32]) -> list[npt.NDArray[Any]]:
        """``model.runtime.run_all(batch)``, its time per window kept in the inference log."""
        start = time.perf_counter()
        output = model.runtime.run_all(batch)
        self.inference_log.latencies.append((time.perf_counter() - start) / batch.shape[0])
        self.counters.inference_calls += 1
        return output

    def _inference_failed(self, exc: Exception) -> None:
        self.counters.inference_errors += 1
        self.inference_log.errors.append((self.counters.inference_errors, str(exc)))
        self._failed("inference", exc)

    def _failed(self, what: str, exc: Exception) -> None:
        self.counters.errors += 1
        if not self._failing:
            self._failing = True
            log.error("pipeline %s: %s failed: %s", self.name, what, exc)


def _median_and_p99(latencies: Iterable[float]) -> tuple[float | None, float | None]:
    """The median and p99 of recent inference times (sorted in one C call: the pipeline's
    thread may append meanwhile)."""
    recent = sorted(latencies)
    if not recent:
        return None, None
    return recent[len(recent) // 2], recent[min(len(recent) - 1, len(recent) * 99 // 100)]


def restart_end(start: Event, now: float) -> Event:
    """The ``end`` of an incident whose ``start`` a previous run stored and never ended."""
    ended = datetime.fromtimestamp(max(now, start.ts.timestamp()), UTC)
    attributes = dict(start.attributes)
    attributes["closed_by"] = "restart"
    attributes["duration_s"] = round((ended - start.ts).total_seconds(), 3)
    return start.model_copy(
        update={"id": new_event_id(), "state": "end", "ts": ended, "attributes": attributes}
    )


def _window(config: PipelineConfig, model: LoadedModel) -> WindowConfig | None:
    """The pipeline's window, its channels defaulting to the model's (a manifest lists them);
    ConfigError when the config names other channels than the model takes."""
    window = config.window
    if window is None or model.channels is None:
        return window
    if window.channels is None:
        return window.model_copy(update={"channels": list(model.channels)})
    if tuple(window.channels) != model.channels:
        raise ConfigError(
            f"pipeline {config.name}: window.channels {window.channels} differ from the "
            f"channels model {model.ref.name} takes, in order: {list(model.channels)}"
        )
    return window
