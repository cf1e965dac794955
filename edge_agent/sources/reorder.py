"""A reorder buffer: readings that arrive out of time order leave it in order.

Sensors that publish their own timestamps (MQTT, OPC UA source timestamps) may deliver out
of order: retries, several publishers, a broker's queue. The buffer holds each reading for
at most ``max_delay_s`` and releases readings in timestamp order; a reading older than one
already released is late beyond repair and is refused (the caller counts it and drops it).

A reading leaves when a reading ``max_delay_s`` newer has arrived, or when it has waited
``max_delay_s`` by the caller's clock (so a stream that stops still drains). The buffer is
pure logic (the clock is an argument); ``Inbox`` puts it between a client library's thread,
which hands readings over, and the source's ``readings()``, which yields them in order.
"""

from __future__ import annotations

import heapq
import itertools
import math
import queue
import threading
import time
from collections.abc import Iterator, Sequence

from edge_agent.sources.readings import Readings, SourceHealth

BATCH_S = 0.01
"""Readings leave the inbox at most this often: windowing a few at a time costs 20x more
per reading than a batch of a hundred, and 10 ms is nothing beside a window's length."""
POLL_S = 0.05
"""How often ``Inbox.drain`` looks at the buffer when no reading comes."""


class ReorderBuffer:
    """Readings ``(ts, values)`` in, the same readings out in ``ts`` order."""

    def __init__(self, max_delay_s: float) -> None:
        self.max_delay_s = max_delay_s
        self._heap: list[tuple[float, int, float, Sequence[float]]] = []
        self._order = itertools.count()  # ties in ts leave in arrival order
        self._newest = -math.inf
        self._released = -math.inf

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, ts: float, values: Sequence[float], arrived: float) -> bool:
        """Hold one reading that arrived at ``arrived`` (the caller's clock); False: too late."""
        if ts < self._released:
            return False
        self._newest = max(self._newest, ts)
        heapq.heappush(self._heap, (ts, next(self._order), arrived, values))
        return True

    def pop_ready(self, now: float) -> list[tuple[float, Sequence[float]]]:
        """The readings whose wait is over, oldest first."""
        out: list[tuple[float, Sequence[float]]] = []
        heap = self._heap
        # Everything up to the newest reading that has waited enough leaves with it, so no
        # reading waits longer than max_delay_s behind an older one that arrived later.
        waited = (ts for ts, _, arrived, _ in heap if now - arrived >= self.max_delay_s)
        cutoff = max(self._newest - self.max_delay_s, max(waited, default=-math.inf))
        while heap and heap[0][0] <= cutoff:
            ts, _, _, values = heapq.heappop(heap)
            out.append((ts, values))
        if out:
            self._released = out[-1][0]
        return out

    def next_due(self) -> float | None:
        """The caller's time at which the oldest held reading leaves at the latest."""
        if not self._heap:
            return None
        return min(arrived for _, _, arrived, _ in self._heap) + self.max_delay_s

    def flush(self) -> list[tuple[float, Sequence[float]]]:
        """Every held reading, oldest first (the stream ends)."""
        return self.pop_ready(math.inf)


class Inbox:
    """Readings put by a callback thread, yielded in time order by ``drain``."""

    def __init__(self, channels: int, max_delay_s: float, health: SourceHealth) -> None:
        self._channels = channels
        self._max_delay_s = max_delay_s
        self._health = health
        self._queue: queue.SimpleQueue[tuple[float, list[float], float]] = queue.SimpleQueue()

    def put(self, ts: float, values: list[float]) -> None:
        """Hand one reading over (thread-safe; never blocks)."""
        self._queue.put((ts, values, time.monotonic()))

    def drain(self, stop: threading.Event) -> Iterator[Readings]:
        """Batches of readings in time order until ``stop``; late ones counted and dropped."""
        buffer = ReorderBuffer(self._max_delay_s)
        released = 0.0
        while not stop.is_set():
            due = buffer.next_due()
            wait = POLL_S if due is None else min(POLL_S, max(due - time.monotonic(), 0.0))
            try:
                item = self._queue.get(timeout=wait)
                while True:
                    ts, values, arrived = item
                    if not buffer.push(ts, values, arrived):
                        self._health.bad_reading("late", f"a reading of {ts:.3f} came too late")
                    item = self._queue.get_nowait()
            except queue.Empty:
                pass
            now = time.monotonic()
            if now - released < BATCH_S:
                continue  # a busy stream is windowed in batches, not a reading at a time
            released = now
            ready = buffer.pop_ready(now)
            if ready:
                self._health.ok(len(ready))
                yield Readings.rows(ready, self._channels)
