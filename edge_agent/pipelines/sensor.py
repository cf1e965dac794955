"""The sensor pipeline: windows -> ORT -> scores -> filters -> events -> local actions and
outbox (the shared run loop is ``base.Pipeline``).

``SensorPipeline.process_windows`` is the whole per-window path without the source's pacing and
without I/O; the run loop and the benchmark both call it. It does one ``session.run`` per
call and vectorised numpy around it, so its overhead over a bare ``session.run`` stays
small. An event's attributes are the model's own per-window outputs when it has some (the
vibration model's ``rms_g`` and ``peak_hz``, from the spectrum its graph computes anyway);
otherwise they are computed here, only for the few windows that produce an event.
"""

from __future__ import annotations

import logging
import math
import re
from datetime import UTC, datetime
from time import perf_counter
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_agent.inference.slot import LoadedModel
from edge_agent.pipelines.base import Pipeline
from edge_agent.pipelines.collect import Encoder, window_encoder
from edge_agent.pipelines.config import PipelineConfig
from edge_agent.pipelines.filters import Decision
from edge_agent.sources.sample import Sample
from shared.errors import ConfigError, ModelError
from shared.fields import MAX_SCORE, AttributeValue
from shared.messages import (
    Event,
    ModelRef,
    new_event_id,
)

log = logging.getLogger(__name__)

EVENT_KIND = "anomaly"
SCORE_LABEL = "anomaly"
"""The label of a score model's events (it scores, it does not classify)."""
LEVEL_EVERY = 8
"""The summary's ``rms_g`` samples one window in 8 (by seq): after an ORT run, even two dot
products cost about 5% of the inference, so measuring every window would eat the budget
of the per-window path; one in 8 is ~0.6% and still ~47 readings a minute at 12.8 kHz."""


class SensorPipeline(Pipeline):
    """A sensor pipeline: windows of readings -> anomaly model -> filters -> events.

    A window is ``[W]`` (one channel) or ``[C, W]`` (a windowed device source); the model
    takes it as ``[B, W]``, ``[B, C, W]`` or ``[B, F]`` with F = C x W. A classifier
    (``anomaly``) gives class probabilities with a normal label, and the window's score is
    1 - p(normal); a scorer (``score``) gives the score itself.
    """

    def _prepare(self, config: PipelineConfig) -> None:
        self._period_s = self.source.period_s
        self._sample_rate_hz = self.source.window / self._period_s
        model = self.slot.current()
        self._channels: tuple[str, ...] = getattr(self.source, "channels", ())
        shape = (
            (len(self._channels), self.source.window) if self._channels else (self.source.window,)
        )
        if model.task not in ("anomaly", "score") or not window_fits(shape, model.input_shape):
            raise ConfigError(
                f"pipeline {self.name}: the source gives windows of {list(shape)} values but "
                f"model {model.ref.name} {model.ref.version} ({model.task}) takes "
                f"{list(model.input_shape) or 'images'}"
            )
        self._next_seq = 0
        self._next_ts = 0.0
        self._score = self._summary.signal("score")
        self._level_names = level_names(self._channels) if len(self._channels) > 1 else []
        self._levels = [self._summary.signal(name) for name in self._level_names or ["rms_g"]]
        self._ones = np.ones(self.source.window, dtype=np.float32)
        # The edge's own call on an input, for the samples it keeps: above the threshold the
        # (most likely fault) label, below it the normal one.
        self._normal_label = (
            model.labels[model.normal_index] if model.task == "anomaly" else "normal"
        )
        self._label_threshold = model.threshold if model.threshold is not None else 0.5

    def _sample_encoder(self, config: PipelineConfig) -> Encoder:
        return window_encoder(self.name, self._sample_rate_hz, self._channels, config.privacy)

    def process_sample(self, sample: Sample) -> list[Event]:
        return self.process_windows(
            sample.data[np.newaxis, ...], first_seq=sample.seq, first_ts=sample.ts
        )

    def process_windows(
        self,
        windows: npt.NDArray[Any],
        *,
        first_seq: int | None = None,
        first_ts: float | None = None,
    ) -> list[Event]:
        """Infer on consecutive windows (``(n, *window)``, or one window); return events.

        ``first_seq``/``first_ts`` default to continuing where the previous call ended, so a
        caller without a source (the benchmark) can pass plain arrays. Raises ModelError.
        """
        seq = self._next_seq if first_seq is None else first_seq
        ts = self._next_ts if first_ts is None else first_ts
        model = self.slot.current()
        batch = windows if windows.dtype == np.float32 else windows.astype(np.float32)
        if batch.ndim == 1 or (batch.ndim == 2 and self._channels and len(self._channels) > 1):
            batch = batch[np.newaxis, ...]
        n = batch.shape[0]
        self.counters.samples_in += n
        self.counters.raw_bytes += batch.nbytes
        self._next_seq = seq + n
        self._next_ts = ts + n * self._period_s
        if n == 1:
            return self._one_window(model, batch, seq, ts)
        outputs = self._timed(model, batch.reshape((n, *model.input_shape)))
        scores, labels = self._scores(model, outputs[0], n)
        self.counters.inferences += n
        step = self.filters.step
        period = self._period_s
        events: list[Event] = []
        collector = self.collector
        for i, score in enumerate(scores):
            decision = step(ts + i * period, seq + i, score, labels[i])
            event = None
            if decision is not None:
                attributes = self._window_attributes(model, batch[i], outputs, i)
                event = self._event(decision, attributes, model.ref)
            if event is not None:
                events.append(event)
            if collector is not None:
                started = event.id if event is not None and event.state == "start" else None
                label = labels[i] if score >= self._label_threshold else self._normal_label
                collector.offer(
                    batch[i], score, label, ts + i * period, model.ref, event_id=started
                )
            if self._esc_lo <= score <= self._esc_hi:
                label = labels[i] if score >= self._label_threshold else self._normal_label
                made = (event,) if event is not None else ()
                self._escalate(batch[i], score, label, ts + i * period, model.ref, made)
            if (shadow := self.shadow) is not None:  # read once: the updater may clear it
                shadow(batch[i], score, labels[i], ts + i * period)
        self._score.merge(n, sum(scores), min(scores), max(scores))
        first = -seq % LEVEL_EVERY
        if first < n:
            self._sample_level(batch, first)
        self.counters.events_out += len(events)
        return events

    def _one_window(
        self, model: LoadedModel, batch: npt.NDArray[np.float32], seq: int, ts: float
    ) -> list[Event]:
        """The hot path of a pipeline fed window by window (a device source, a paced machine):
        the same checks and bookkeeping as the batch path, without its lists."""
        # _timed inlined: after an ORT run the interpreter's caches are cold, and each frame
        # left out of this path is worth about a microsecond.
        start = perf_counter()
        outputs = model.runtime.run_all(batch.reshape((1, *model.input_shape)))
        self.inference_log.latencies.append(perf_counter() - start)
        output = outputs[0]
        counters = self.counters
        counters.inference_calls += 1
        if model.task == "score":
            try:
                score = output.item()  # a Python float (cheaper than a size check and a read)
            except ValueError:  # more than one number
                self._scores(model, output, 1)  # raises, naming the shape
                raise
            if not -MAX_SCORE < score < MAX_SCORE:  # NaN fails both comparisons
                _check_finite(f"model {model.ref.name} {model.ref.version}", score, score, score)
            label = SCORE_LABEL
        else:
            score, label = _classified(model, output)
        counters.inferences += 1
        decision = self.filters.step(ts, seq, score, label)
        acc = self._score  # SignalAccumulator.add inlined: one frame less per window
        acc.count += 1
        acc.total += score
        if score < acc.low:
            acc.low = score
        if score > acc.high:
            acc.high = score
        if seq % LEVEL_EVERY == 0:
            self._sample_level(batch, 0)
        events = []
        if decision is not None:
            attributes = self._window_attributes(model, batch[0], outputs, 0)
            events.append(self._event(decision, attributes, model.ref))
        counters.events_out += len(events)
        if self.collector is not None:
            started = events[0].id if events and events[0].state == "start" else None
            kept = label if score >= self._label_threshold else self._normal_label
            self.collector.offer(batch[0], score, kept, ts, model.ref, event_id=started)
        if self._esc_lo <= score <= self._esc_hi:
            kept = label if score >= self._label_threshold else self._normal_label
            self._escalate(batch[0], score, kept, ts, model.ref, events)
        if (shadow := self.shadow) is not None:  # read once: the updater may clear it
            shadow(batch[0], score, label, ts)
        return events

    def _scores(
        self, model: LoadedModel, output: npt.NDArray[Any], n: int
    ) -> tuple[list[float], list[str]]:
        """Each window's score and label; ModelError for an output that breaks the contract
        (an inference error the updater's health window counts, never NaN in the filters)."""
        name = f"model {model.ref.name} {model.ref.version}"
        if model.task == "score":
            if output.size != n:
                raise ModelError(f"{name}: output shape {output.shape} is not one score per window")
            rows = output.reshape(n).tolist()
            _check_finite(name, sum(rows), min(rows), max(rows))
            return rows, [SCORE_LABEL] * n
        if output.shape != (n, len(model.labels)):
            raise ModelError(
                f"{name}: output shape {output.shape} does not fit {n} windows of "
                f"{len(model.labels)} labels"
            )
        probabilities = output.tolist()
        # On the few rows of a batch Python's sums are ~10x cheaper than numpy's.
        _check_finite(
            name, sum(map(sum, probabilities)), 1 - max(map(max, probabilities)),
            1 - min(map(min, probabilities)),
        )  # fmt: skip
        normal, faults, labels = model.normal_index, model.fault_indices, model.labels
        # The label of an anomalous window is its most likely fault, never the normal one.
        return (
            [1.0 - row[normal] for row in probabilities],
            [labels[max(faults, key=row.__getitem__)] for row in probabilities],
        )

    def _sample_level(self, batch: npt.NDArray[np.float32], first: int) -> None:
        """Fold every LEVEL_EVERY-th window's level into the summary: the RMS (DC removed, as
        the event's ``rms_g``) of a one-channel window from two BLAS dot products, or each
        channel's mean of a multi-channel one from one (``ndarray.mean`` costs several times
        more on a few channels: ~3.5 us a window on average in the scorer benchmark)."""
        ones, inv_w, dot = self._ones, 1.0 / batch.shape[-1], np.dot
        if len(self._levels) > 1:
            for i in range(first, batch.shape[0], LEVEL_EVERY):
                sums = dot(batch[i], ones).tolist()  # [C]: one sum per channel
                for acc, total in zip(self._levels, sums, strict=False):
                    acc.add(total * inv_w)
            return
        (acc,) = self._levels
        for i in range(first, batch.shape[0], LEVEL_EVERY):
            x = batch[i].reshape(-1)
            mean = float(dot(x, ones)) * inv_w
            acc.add(math.sqrt(max(float(dot(x, x)) * inv_w - mean * mean, 0.0)))

    def close(self) -> list[Event]:
        """End open events because the stream ends; nothing if none is open."""
        ts = self._next_ts - self._period_s
        decisions = self.filters.close_all(ts, max(self._next_seq - 1, 0))
        ref = self.slot.current().ref
        events = [self._event(d, {}, ref, closed_by="shutdown") for d in decisions]
        self.counters.events_out += len(events)
        return events

    def _window_attributes(
        self,
        model: LoadedModel,
        window: npt.NDArray[np.float32],
        outputs: list[npt.NDArray[Any]],
        index: int,
    ) -> dict[str, AttributeValue]:
        """What an event on ``window`` (the ``index``-th of the batch ``outputs`` came from)
        says about it: the model's attribute outputs if it has any, otherwise each channel's
        mean (several channels) or the RMS level and dominant frequency (one)."""
        if names := model.runtime.attribute_names:
            return model_attributes(names, outputs[1:], index)
        if len(self._channels) > 1:
            return dict(channel_means(window, self._level_names, self._ones))
        return dict(window_features(window.reshape(-1), self._sample_rate_hz))

    def _event(
        self,
        decision: Decision,
        attributes: dict[str, AttributeValue],
        ref: ModelRef,
        closed_by: str | None = None,
    ) -> Event:
        if decision.state in ("update", "end"):
            # An update carries the peak as its score and the window's own score here.
            attributes["duration_s"] = round(decision.ts - decision.start_ts, 3)
            attributes["value"] = round(decision.value, 6)
        if closed_by is not None:
            attributes["closed_by"] = closed_by
        return Event(
            id=new_event_id(),
            pipeline=self.name,
            kind=EVENT_KIND,
            state=decision.state,
            label=decision.label,
            score=round(decision.score, 6),
            ts=datetime.fromtimestamp(decision.ts, UTC),
            seq=decision.seq,
            model=ref,
            attributes=attributes,
        )


def model_attributes(
    names: tuple[str, ...], outputs: list[npt.NDArray[Any]], index: int
) -> dict[str, AttributeValue]:
    """A window's attributes from the model's attribute outputs (one number per window each):
    floats rounded to 6 decimals as scores are; a NaN or infinite one is left out (the wire
    refuses it, and the rest of the event is still worth sending)."""
    attributes: dict[str, AttributeValue] = {}
    for name, values in zip(names, outputs, strict=True):
        value = values.item(index)
        if isinstance(value, float):
            if math.isfinite(value):
                attributes[name] = round(value, 6)
        else:
            attributes[name] = value
    return attributes


def window_features(window: npt.NDArray[np.float32], sample_rate_hz: float) -> dict[str, float]:
    """What an operator reads first on a vibration event: RMS level and dominant frequency."""
    x = window - window.mean()
    power = np.abs(np.fft.rfft(x))  # float32 in, complex64 out: no float64 copy
    peak_bin = int(np.argmax(power[1:])) + 1  # skip DC
    rms = float(np.sqrt(np.square(x).mean()))
    return {"rms_g": round(rms, 4), "peak_hz": round(peak_bin * sample_rate_hz / len(x), 2)}


MAX_LEVELS = 24
"""Channels whose mean a summary and an event carry: the wire allows 32 signals (the score is
one) and 32 attributes (an end adds duration_s, value and closed_by)."""


def level_names(channels: tuple[str, ...]) -> list[str]:
    """``<channel>_mean`` for the first MAX_LEVELS channels, as the wire's names allow: other
    characters become ``_`` and long names are cut (a CSV column "Flow [l/s]" is a channel
    too); a name that comes out twice gets the channel's index."""
    names: list[str] = []
    for index, channel in enumerate(channels[:MAX_LEVELS]):
        base = re.sub(r"[^A-Za-z0-9_.:-]", "_", channel)[:50]
        name = f"{base}_mean"
        names.append(name if name not in names else f"{base}_{index}_mean")
    return names


def channel_means(
    window: npt.NDArray[np.float32], names: list[str], ones: npt.NDArray[np.float32]
) -> dict[str, float]:
    """The first channels' means over a ``[C, W]`` window, under ``level_names``: one BLAS
    product with ``ones`` (``W`` of them), as ``_sample_level`` (``ndarray.mean`` costs
    several times more on a few rows)."""
    inv_w = 1.0 / window.shape[-1]
    sums = np.dot(window, ones).tolist()
    return {name: round(total * inv_w, 6) for name, total in zip(names, sums, strict=False)}


def _classified(model: LoadedModel, output: npt.NDArray[Any]) -> tuple[float, str]:
    """One window's score (1 - p(normal)) and most likely fault from a classifier's output,
    with ``SensorPipeline._scores``' checks."""
    labels = model.labels
    if output.shape != (1, len(labels)):
        raise ModelError(
            f"model {model.ref.name} {model.ref.version}: output shape {output.shape} does not "
            f"fit 1 windows of {len(labels)} labels"
        )
    (row,) = output.tolist()
    # Every probability finite (a NaN or inf makes the sum so) and the score within the
    # contract: the two checks ``_scores`` makes, on what reaches the filters, in two steps
    # (after an ORT run each Python step is dear: a max and a min cost ~1 us here).
    total, score = sum(row), 1.0 - row[model.normal_index]
    if not (math.isfinite(total) and -MAX_SCORE < score < MAX_SCORE):
        _check_finite(f"model {model.ref.name} {model.ref.version}", total, score, score)
    return score, labels[max(model.fault_indices, key=row.__getitem__)]


def _check_finite(name: str, total: float, low: float, high: float) -> None:
    """Refuse NaN, inf and scores beyond the contract's bound (the wire would refuse the
    event), before the filters see them. ``total`` is a sum: NaN and inf survive one."""
    if not math.isfinite(total):
        raise ModelError(f"{name}: output is not finite (NaN or inf)")
    if high >= MAX_SCORE or low <= -MAX_SCORE:
        raise ModelError(f"{name}: output outside +-{MAX_SCORE:g}")


def window_fits(window: tuple[int, ...], model_input: tuple[int, ...]) -> bool:
    """Whether windows of this shape feed a model input (both without the batch axis)."""
    if not model_input or math.prod(window) != math.prod(model_input):
        return False
    return len(model_input) != 2 or window == model_input or (len(window), model_input[0]) == (1, 1)
