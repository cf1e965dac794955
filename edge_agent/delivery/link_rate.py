"""The link's rate, measured from the cloud's end-to-end acks while a backlog was drained.

Pure logic, no I/O: the uplink tells it, for each acked batch, its payload size, when it was
published, when its ack came, and whether the outbox still had more to send when the batch
went out (a *backlog*: then the sender was held back by its ack window, so the path, not the
data rate, set the pace).

The estimator takes one sample per ack message (ingest answers several batches in one
``Acks``): the bytes of the backlogged batches it acknowledges, over the wall time they were
waited for and no earlier ack was: from the later of their publish and the previous ack
message to this one. These spans never overlap, so acks that arrive together count their
bytes once over one span (no ack compression). The rate is the median of the last
``LINK_SAMPLES`` samples (a deque: bounded memory): a stall (the cloud down for a while, a
reconnect) spoils one sample, not the estimate. Periods with no backlog add no sample, so a
sparse data rate does not pass for a slow link; with no backlog among the recent batches the
rate is None: the agent does not know its capacity.

Each backlogged batch's own payload over its round trip (publish to ack) is a floor: those
bytes crossed the path in that time, so the rate is never reported below the largest of them.

What it measures is the path end to end (link, broker and the cloud's ingest commit) with the
agent's window of unacknowledged batches: the rate at which this agent can actually deliver,
which is what shipping raw data to the cloud would get. Escalations are left out: their ack
is the cloud model's answer, which includes its inference time.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass

from shared.messages import MAX_LINK_MBPS

LINK_SAMPLES = 256
"""Ack messages (with backlogged batches) the rate is measured over, the most recent."""


@dataclass(slots=True)
class _Sample:
    """The backlogged batches one ack message answered."""

    at: float
    size: int
    span_s: float
    """The wall time they were waited for and no earlier ack was."""
    floor: float
    """The largest of their sizes over their round trips (bytes per second)."""


class LinkRate:
    """Bytes per second the cloud acknowledged while the agent had a backlog."""

    def __init__(self, samples: int = LINK_SAMPLES) -> None:
        self._samples: deque[_Sample] = deque(maxlen=samples)
        self._previous: float | None = None
        """When the ack message before the current one came."""
        self._current: float | None = None

    def acked(self, size: int, published_at: float, backlogged: bool, now: float) -> None:
        """A batch of ``size`` payload bytes, published at ``published_at``, acked ``now``
        (batches of one ack message come with the same ``now``)."""
        if self._current is None or now > self._current:
            self._previous, self._current = self._current, now
        if not backlogged or size <= 0:
            return
        start = published_at if self._previous is None else max(published_at, self._previous)
        span = max(now - start, 0.0)
        rtt = now - published_at
        floor = size / rtt if rtt > 0 else 0.0
        last = self._samples[-1] if self._samples else None
        if last is not None and last.at == now:
            last.size += size
            last.span_s = max(last.span_s, span)
            last.floor = max(last.floor, floor)
        else:
            self._samples.append(_Sample(now, size, span, floor))

    def mbps(self) -> float | None:
        """The measured rate in Mbit/s (None: the link was never the limit, recently)."""
        rates = [s.size / s.span_s for s in self._samples if s.span_s > 0]
        if not rates:
            return None  # no backlog, or every ack came at the instant of its publish
        best = max(statistics.median(rates), *(s.floor for s in self._samples))
        return min(best * 8 / 1e6, MAX_LINK_MBPS)
