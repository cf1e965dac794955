"""The link's rate, measured from the cloud's end-to-end acks while a backlog was drained.

Pure logic, no I/O: the uplink tells it, for each acked batch, its payload size, when it was
published, when its ack came, and whether the outbox still had more to send when the batch
went out (a *backlog*: then the sender was held back by its ack window, so the path, not the
data rate, set the pace).

The estimator counts, for each backlogged batch, the wall time its ack was being waited for
and nobody else's was: from the later of its publish and the previous ack (of any batch) to
its own ack. These spans never overlap, and acks that arrive together (one ``Acks`` message
answers several batches) add their bytes at no extra time, which is right: their time was
counted in the first span. The rate is the sum of the backlogged batches' bytes over the sum
of their spans, over the last ``LINK_SAMPLES`` of them (a deque: bounded memory). Periods with
no backlog add nothing, so a sparse data rate does not pass for a slow link; with no backlog
among the recent batches the rate is None: the agent does not know its capacity.

Each backlogged batch's own payload over its round trip (publish to ack) is a floor: those
bytes crossed the path in that time, so the rate is never reported below the largest of them.

What it measures is the path end to end (link, broker and the cloud's ingest commit) with the
agent's window of unacknowledged batches: the rate at which this agent can actually deliver,
which is what shipping raw data to the cloud would get. Escalations are left out: their ack
is the cloud model's answer, which includes its inference time.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from shared.messages import MAX_LINK_MBPS

LINK_SAMPLES = 256
"""Backlogged batches the rate is measured over (the most recent)."""


@dataclass(frozen=True, slots=True)
class _Sample:
    size: int
    span_s: float
    """The wall time this batch's ack alone was being waited for."""
    rtt_s: float


class LinkRate:
    """Bytes per second the cloud acknowledged while the agent had a backlog."""

    def __init__(self, samples: int = LINK_SAMPLES) -> None:
        self._samples: deque[_Sample] = deque(maxlen=samples)
        self._last_ack: float | None = None

    def acked(self, size: int, published_at: float, backlogged: bool, now: float) -> None:
        """A batch of ``size`` payload bytes, published at ``published_at``, acked ``now``."""
        start = published_at if self._last_ack is None else max(published_at, self._last_ack)
        self._last_ack = now if self._last_ack is None else max(self._last_ack, now)
        if backlogged and size > 0:
            span = max(now - start, 0.0)
            self._samples.append(_Sample(size, span, max(now - published_at, 0.0)))

    def mbps(self) -> float | None:
        """The measured rate in Mbit/s (None: the link was never the limit, recently)."""
        if not self._samples:
            return None
        size = sum(s.size for s in self._samples)
        span = sum(s.span_s for s in self._samples)
        rates = [s.size / s.rtt_s for s in self._samples if s.rtt_s > 0]
        if span > 0:
            rates.append(size / span)
        if not rates:
            return None  # every ack came at the very instant of its publish: no time measured
        return min(max(rates) * 8 / 1e6, MAX_LINK_MBPS)
