"""A pipeline: source -> preprocessing -> ORT -> postprocessing -> filter -> events -> outbox.

``Pipeline.process_windows`` is the whole per-window path without the source's pacing and
without I/O; the run loop and the benchmark both call it. It does one ``session.run`` per
call and vectorised numpy around it, so its overhead over a bare ``session.run`` stays
small; the expensive event attributes (FFT) are computed only for the few windows that
produce an event.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from edge_agent.config import PipelineConfig
from edge_agent.filters import Decision, Filter, build_filter
from edge_agent.inference.slot import ModelSlot
from edge_agent.outbox import Outbox
from edge_agent.sources.registry import build_source
from edge_agent.sources.sample import Source
from shared.errors import ConfigError, ModelError, StorageError
from shared.messages import Event, ModelRef, PipelineStatus, new_event_id

log = logging.getLogger(__name__)

EVENT_KIND = "anomaly"


@dataclass(slots=True)
class PipelineCounters:
    """What a pipeline has done since the agent started (reported in status and metrics)."""

    samples_in: int = 0
    inferences: int = 0
    events_out: int = 0
    errors: int = 0


class Pipeline:
    """One configured pipeline: its source, its model slot, its filter state, its counters."""

    def __init__(self, config: PipelineConfig, slot: ModelSlot, source: Source | None = None):
        self.name = config.name
        self.slot = slot
        self.source = source if source is not None else build_source(config.source)
        self.counters = PipelineCounters()
        self._filter: Filter = build_filter(config.filter)
        self._period_s = self.source.period_s
        self._sample_rate_hz = self.source.window / self._period_s
        model = slot.current()
        if model.window != self.source.window:
            raise ConfigError(
                f"pipeline {self.name}: the source gives windows of {self.source.window} values "
                f"but model {model.ref.name} {model.ref.version} takes {model.window}"
            )
        self._failing = False
        self._next_seq = 0
        self._next_ts = 0.0

    def process_windows(
        self,
        windows: npt.NDArray[np.float32],
        *,
        first_seq: int | None = None,
        first_ts: float | None = None,
    ) -> list[Event]:
        """Infer on consecutive windows (``(n, window)``, or one ``(window,)``); return events.

        ``first_seq``/``first_ts`` default to continuing where the previous call ended, so a
        caller without a source (the benchmark) can pass plain arrays. Raises ModelError.
        """
        seq = self._next_seq if first_seq is None else first_seq
        ts = self._next_ts if first_ts is None else first_ts
        model = self.slot.current()
        batch = windows if windows.dtype == np.float32 else windows.astype(np.float32)
        if batch.ndim == 1:
            batch = batch[np.newaxis, :]
        n = batch.shape[0]
        self.counters.samples_in += n
        self._next_seq = seq + n
        self._next_ts = ts + n * self._period_s
        probabilities = model.runtime.run(batch)
        self.counters.inferences += n
        # Plain Python over the rows is cheaper than numpy for the few rows of a batch.
        normal = model.normal_index
        faults = model.fault_indices
        labels = model.labels
        step = self._filter.step
        events: list[Event] = []
        for i, row in enumerate(probabilities.tolist()):
            # The label of an anomalous window is its most likely fault, never the normal one.
            label = labels[max(faults, key=row.__getitem__)]
            decision = step(seq + i, 1.0 - row[normal], label)
            if decision is not None:
                events.append(self._event(decision, batch[i], ts + i * self._period_s, model.ref))
        self.counters.events_out += len(events)
        return events

    def close(self) -> list[Event]:
        """End an open event because the stream ends; nothing if none is open."""
        decision = self._filter.close(max(self._next_seq - 1, 0))
        if decision is None:
            return []
        ts = self._next_ts - self._period_s
        event = self._event(decision, None, ts, self.slot.current().ref, closed_by="shutdown")
        self.counters.events_out += 1
        return [event]

    def run(self, outbox: Outbox, stop: threading.Event) -> None:
        """Process the source until it ends or ``stop`` is set, then close any open event."""
        for sample in self.source.samples(stop):
            try:
                events = self.process_windows(
                    sample.data[np.newaxis, :], first_seq=sample.seq, first_ts=sample.ts
                )
            except ModelError as exc:
                self._failed("inference", exc)
                continue
            if self._failing:
                self._failing = False
                log.info("pipeline %s: inference works again", self.name)
            if events:
                self._store(outbox, events)
        self._store(outbox, self.close())

    def status(self) -> PipelineStatus:
        c = self.counters
        return PipelineStatus(
            name=self.name,
            model=self.slot.current().ref,
            samples_in=c.samples_in,
            inferences=c.inferences,
            events_out=c.events_out,
            errors=c.errors,
        )

    def _store(self, outbox: Outbox, events: list[Event]) -> None:
        if not events:
            return
        try:
            outbox.put(events)
        except StorageError as exc:
            self._failed("outbox", exc)

    def _failed(self, what: str, exc: Exception) -> None:
        self.counters.errors += 1
        if not self._failing:
            self._failing = True
            log.error("pipeline %s: %s failed: %s", self.name, what, exc)

    def _event(
        self,
        decision: Decision,
        window: npt.NDArray[np.float32] | None,
        ts: float,
        ref: ModelRef,
        closed_by: str | None = None,
    ) -> Event:
        attributes: dict[str, float | int | str | bool] = {}
        if window is not None:
            attributes.update(window_features(window, self._sample_rate_hz))
        if decision.state == "end":
            attributes["duration_s"] = round(
                (decision.seq - decision.start_seq) * self._period_s, 3
            )
        if closed_by is not None:
            attributes["closed_by"] = closed_by
        return Event(
            id=new_event_id(),
            pipeline=self.name,
            kind=EVENT_KIND,
            state=decision.state,
            label=decision.label,
            score=round(decision.score, 6),
            ts=datetime.fromtimestamp(ts, UTC),
            seq=decision.seq,
            model=ref,
            attributes=attributes,
        )


def window_features(window: npt.NDArray[np.float32], sample_rate_hz: float) -> dict[str, float]:
    """What an operator reads first on a vibration event: RMS level and dominant frequency."""
    x = window - window.mean()
    power = np.abs(np.fft.rfft(x))  # float32 in, complex64 out: no float64 copy
    peak_bin = int(np.argmax(power[1:])) + 1  # skip DC
    rms = float(np.sqrt(np.square(x).mean()))
    return {"rms_g": round(rms, 4), "peak_hz": round(peak_bin * sample_rate_hz / len(x), 2)}
