"""The window of batches the cloud has not acknowledged yet: pure bookkeeping, no I/O.

A batch enters when it is published and leaves when the cloud acks it (``settle``) or when it
must go again (``due``, ``after_reconnect``, ``refused``). The ack timeout counts from the
broker's PUBACK (a batch paho still holds while offline has reached nobody yet). It adapts to
a slow cloud: never below four times the measured p99 round trip, and doubled (up to 8x) each
time a round of resends gets no ack at all, back to normal at the next ack, so a fleet facing
a stalled cloud does not fill the broker's queues with copies. Each ack also feeds the
measured link rate (``link_rate.py``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from edge_agent.delivery.link_rate import LinkRate
from edge_agent.delivery.outbox import PayloadKind
from shared.messages import BatchAck

RTT_SAMPLES = 512
"""Round trips kept for the p50/p99."""
TIMEOUT_PER_RTT = 4.0
"""The ack timeout is at least this many times the measured p99 round trip."""
MAX_BACKOFF = 8.0
"""Unanswered resends stretch the timeout up to this factor."""


@dataclass(slots=True)
class Pending:
    """A batch published and not yet acknowledged by the cloud."""

    kind: PayloadKind
    ids: list[str]
    published_at: float
    pubacked_at: float | None = None
    size: int = 0
    """Payload bytes published."""
    backlogged: bool = False
    """The outbox had more to send when it went out (the path, not the data, set the pace)."""


@dataclass(frozen=True, slots=True)
class Settled:
    """A batch the cloud answered: ``stored`` or ``rejected`` (dead-lettered), and why."""

    batch: Pending
    ack: BatchAck


class AckWindow:
    """Batches in flight to the cloud, oldest first, with the measured round trip."""

    def __init__(self, timeout_s: float) -> None:
        self._floor_s = timeout_s
        self._rtt_floor_s = timeout_s
        self._backoff = 1.0
        self._pending: dict[str, Pending] = {}
        self._rtts: deque[float] = deque(maxlen=RTT_SAMPLES)
        self._since_refresh = 0
        self._link = LinkRate()

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def timeout_s(self) -> float:
        """How long after its PUBACK a batch waits for its ack before it goes again."""
        return self._rtt_floor_s * self._backoff

    def add(
        self,
        batch_id: str,
        kind: PayloadKind,
        ids: list[str],
        now: float,
        *,
        size: int = 0,
        backlogged: bool = False,
    ) -> None:
        self._pending[batch_id] = Pending(kind, ids, now, size=size, backlogged=backlogged)

    def pubacked(self, batch_id: str, now: float) -> bool:
        """The broker has the batch; False if it is no longer waiting (already acked)."""
        batch = self._pending.get(batch_id)
        if batch is None:
            return False
        batch.pubacked_at = now
        return True

    def refused(self, batch_id: str) -> list[str]:
        """The broker refused the batch: its ids, to go again (nothing if not waiting)."""
        batch = self._pending.pop(batch_id, None)
        return [] if batch is None else batch.ids

    def settle(self, acks: Iterable[BatchAck], now: float) -> list[Settled]:
        """The batches these acks answer (late or repeated acks answer nothing)."""
        settled = []
        for ack in acks:
            batch = self._pending.pop(ack.batch_id, None)
            if batch is not None:
                settled.append(Settled(batch, ack))
                self._rtts.append(now - batch.published_at)
                if batch.kind != "escalation":  # its ack waits for the cloud model's answer
                    self._link.acked(batch.size, batch.published_at, batch.backlogged, now)
        if settled:
            self._backoff = 1.0
            self._since_refresh += len(settled)
            if self._since_refresh >= 64:
                self._since_refresh = 0
                rtt = self.rtt()
                scaled = self._floor_s if rtt is None else TIMEOUT_PER_RTT * rtt[1]
                self._rtt_floor_s = max(self._floor_s, scaled)
        return settled

    def due(self, now: float) -> list[Pending]:
        """Batches whose ack is overdue, taken out of the window to go again."""
        deadline = now - self.timeout_s
        late = self._take(lambda b: b.pubacked_at is not None and b.pubacked_at <= deadline)
        if late:
            self._backoff = min(self._backoff * 2, MAX_BACKOFF)
        return late

    def after_reconnect(self) -> list[Pending]:
        """Batches the broker took before the connection dropped (it may have lost them)."""
        return self._take(lambda b: b.pubacked_at is not None)

    def rtt(self) -> tuple[float, float] | None:
        """(p50, p99) seconds from publishing a batch to its ack, of recent batches."""
        samples = sorted(self._rtts)
        if not samples:
            return None
        last = len(samples) - 1
        return samples[last // 2], samples[min(last, round(last * 0.99))]

    def link_mbps(self) -> float | None:
        """The link rate measured while a backlog was drained (None: never the limit)."""
        return self._link.mbps()

    def _take(self, due: Callable[[Pending], bool]) -> list[Pending]:
        taken = [(key, b) for key, b in self._pending.items() if due(b)]
        for key, _ in taken:
            del self._pending[key]
        return [b for _, b in taken]
