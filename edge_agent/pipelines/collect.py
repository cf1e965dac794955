"""Collection at the edge: which raw inputs a pipeline keeps for the cloud, and at what rate.

A pipeline's ``collect:`` keeps a random share of its inputs, the inputs whose score lies in
a band (around the decision threshold, where the model is least sure), and the inputs behind
each event: the one that started it, the ``before`` inputs just before it (a small ring of
recent inputs) and the ``after`` inputs after it. Caps per minute and per day (on the
inputs' own time) bound what is kept whatever the rules say; an input over a cap is counted,
never kept.

The decision is O(1) on the hot path: a few comparisons, a random draw and, with
``before``, a ring append of a copy (an input is often a view into its batch, or into a
buffer its source reuses: a reference would show later readings, and pin the whole batch).
A kept input is copied and handed to the spool's writer thread through a bounded queue; the
metadata, the encoding (``.npy`` or a JPEG under the privacy policy) and the disk write all
happen there.
"""

from __future__ import annotations

import hashlib
import io
import random
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import Field, model_validator

from edge_agent.config_types import StrictConfig
from edge_agent.delivery.spool import PendingSample, Spool
from edge_agent.inference.postprocess import Detection
from edge_agent.pipelines.privacy import PrivacyConfig, images_that_leave
from shared.messages import ModelRef, new_event_id
from shared.samples import SampleMeta, SampleReason, WindowInfo

MINUTE_S = 60.0
DAY_S = 86400.0
MAX_AROUND = 32


class CollectConfig(StrictConfig):
    """``collect:`` of a pipeline: what raw inputs it keeps for the cloud, and how many."""

    random_share: float = Field(
        default=0.0, ge=0, le=1, description="share of all inputs kept at random"
    )
    band: tuple[float, float] | None = Field(
        default=None, description="[lo, hi]: inputs whose score lies within are kept"
    )
    events: bool = Field(default=True, description="keep the input that starts each event")
    before: int = Field(
        default=2, ge=0, le=MAX_AROUND, description="inputs kept from just before an event"
    )
    after: int = Field(
        default=2, ge=0, le=MAX_AROUND, description="inputs kept from just after an event"
    )
    max_per_minute: int = Field(default=60, ge=0, description="at most this many kept a minute")
    max_per_day: int = Field(default=5000, ge=0, description="at most this many kept a day")
    seed: int | None = Field(default=None, description="seed of the random share (tests)")

    @model_validator(mode="after")
    def _band_in_order(self) -> CollectConfig:
        if self.band is not None and not self.band[0] <= self.band[1]:
            raise ValueError(f"band [lo, hi] needs lo <= hi, got {list(self.band)}")
        return self


@dataclass(slots=True)  # not frozen: a frozen dataclass costs ~1 us more to build
class Kept:
    """One kept input, as the hot path hands it over (copied), with why it was kept."""

    data: npt.NDArray[Any]
    score: float
    label: str
    ts: float
    reason: SampleReason
    model: ModelRef
    event_id: str | None = None
    detections: Sequence[Detection] = ()


@dataclass(slots=True)
class CollectCounters:
    """What a pipeline's collection did since the agent started."""

    kept: Counter[str] = field(default_factory=Counter)
    """Inputs handed to the spool, by reason."""
    capped: int = 0
    """Inputs a rule wanted that the per-minute or per-day cap refused."""


Encoder = Callable[[Kept, str], list[tuple[SampleMeta, bytes]]]
"""Kept input and the agent id -> each sample's metadata and blob (none: nothing may leave)."""


class Collector:
    """The ``collect:`` rules of one pipeline, feeding the spool."""

    def __init__(
        self,
        config: CollectConfig,
        *,
        pipeline: str,
        agent_id: str,
        spool: Spool,
        encoder: Encoder,
    ) -> None:
        self.config = config
        self.counters = CollectCounters()
        self._pipeline = pipeline
        self._agent_id = agent_id
        self._spool = spool
        self._encoder = encoder
        self._random = random.Random(config.seed).random
        self._share = config.random_share
        self._lo, self._hi = config.band if config.band is not None else (1.0, 0.0)
        self._ring: deque[tuple[Any, float, str, float, Sequence[Detection]]] = deque(
            maxlen=config.before or 1
        )
        self._after_left = 0
        self._after_event: str | None = None
        self._minute = self._day = -1.0
        self._in_minute = self._in_day = 0

    def offer(
        self,
        data: npt.NDArray[Any],
        score: float,
        label: str,
        ts: float,
        model: ModelRef,
        *,
        event_id: str | None = None,
        detections: Sequence[Detection] = (),
    ) -> None:
        """Decide on one input; ``event_id`` names the event it starts, if it starts one."""
        config = self.config
        reason: SampleReason | None = None
        if event_id is not None and config.events:
            self._keep_before(event_id, model)
            reason, self._after_left, self._after_event = "event", config.after, event_id
        elif self._after_left:
            self._after_left -= 1
            reason, event_id = "event", self._after_event
        elif self._lo <= score <= self._hi:
            reason = "band"
        elif self._share and self._random() < self._share:
            reason = "random"
        if config.before:
            self._ring.append((data.copy(), score, label, ts, detections))
        if reason is not None:
            self._keep(Kept(data.copy(), score, label, ts, reason, model, event_id, detections))

    def admit(self, reason: SampleReason, ts: float) -> bool:
        """Whether the caps let one more input be kept for ``reason``, kept by another part
        (an escalated input, which the escalation thread writes as it sent it); counted."""
        if not self._within_caps(ts):
            self.counters.capped += 1
            return False
        self.counters.kept[reason] += 1
        return True

    def _keep_before(self, event_id: str, model: ModelRef) -> None:
        """The ring's inputs, kept as the event's ``before`` (oldest first)."""
        while self._ring:
            data, score, label, ts, detections = self._ring.popleft()  # copied when it came
            self._keep(Kept(data, score, label, ts, "event", model, event_id, detections))

    def _keep(self, kept: Kept) -> None:
        if not self._within_caps(kept.ts):
            self.counters.capped += 1
            return
        agent_id, encoder = self._agent_id, self._encoder
        pending = PendingSample(self._pipeline, lambda: encoder(kept, agent_id))
        if self._spool.submit(pending):
            self.counters.kept[kept.reason] += 1

    def _within_caps(self, ts: float) -> bool:
        minute, day = ts // MINUTE_S, ts // DAY_S
        if minute != self._minute:
            self._minute, self._in_minute = minute, 0
        if day != self._day:
            self._day, self._in_day = day, 0
        if self._in_minute >= self.config.max_per_minute or self._in_day >= self.config.max_per_day:
            return False
        self._in_minute += 1
        self._in_day += 1
        return True


def sample_meta(
    kept: Kept,
    agent_id: str,
    pipeline: str,
    blob: bytes,
    sample_id: str | None = None,
    **layout: Any,
) -> SampleMeta:
    """The metadata of one sample of ``kept`` with this blob (``layout``: kind and its info)."""
    return SampleMeta(
        id=sample_id or new_event_id(),
        agent_id=agent_id,
        pipeline=pipeline,
        ts=datetime.fromtimestamp(kept.ts, UTC),
        reason=kept.reason,
        size=len(blob),
        sha256=hashlib.sha256(blob).hexdigest(),
        model=kept.model,
        label=kept.label,
        score=kept.score,
        event_id=kept.event_id,
        **layout,
    )


def npy_header(array: npt.NDArray[Any]) -> bytes:
    """The ``.npy`` header of arrays of this one's shape and dtype (C order)."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, np.lib.format.header_data_from_array_1_0(array))
    return buffer.getvalue()


def window_encoder(
    pipeline: str, sample_rate_hz: float, channels: Sequence[str], privacy: PrivacyConfig
) -> Encoder:
    """Sensor windows as ``.npy`` (float32, ``[W]`` or ``[C, W]``) with rate and channels."""

    headers: dict[tuple[int, ...], bytes] = {}

    def encode(kept: Kept, agent_id: str) -> list[tuple[SampleMeta, bytes]]:
        window = np.ascontiguousarray(kept.data, dtype=np.float32)
        if window.shape not in headers:  # the writer thread holds the GIL less this way
            headers[window.shape] = npy_header(window)
        blob = headers[window.shape] + window.tobytes()
        info = WindowInfo(
            shape=list(window.shape), sample_rate_hz=sample_rate_hz, channels=list(channels)
        )
        meta = sample_meta(
            kept, agent_id, pipeline, blob, kind="window", window=info, privacy=privacy.policy()
        )
        return [(meta, blob)]

    return encode


def image_encoder(pipeline: str, privacy: PrivacyConfig) -> Encoder:
    """Camera frames as JPEGs, as the privacy policy allows: the frame, or a crop per object
    of a label that may leave (each its own sample)."""

    def encode(kept: Kept, agent_id: str) -> list[tuple[SampleMeta, bytes]]:
        policy = privacy.policy()
        return [
            (
                sample_meta(
                    kept, agent_id, pipeline, blob, kind="image", image=info, privacy=policy
                ),
                blob,
            )
            for blob, info in images_that_leave(privacy, kept.data, kept.detections)
        ]

    return encode
