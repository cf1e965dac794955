"""Group commit between the pipelines and the outbox: one thread stores what they hand over.

A pipeline's thread hands its events (after local actions have them) and summaries to
``put``/``put_summary`` and goes on with the next sample; this writer's thread stores
everything handed over since its last commit in one outbox transaction. A commit costs
about 100 µs whatever it holds, as much as several inferences of a small model: done on the
pipeline's thread, once per event, it was most of the cost of an incident (DESIGN §4, issue
15). SQLite releases the GIL while it writes, so the commit runs beside the inferences.

What this changes, and what it does not:

* An event is durable within ``LINGER_S`` and a commit after it is handed over, no longer
  when ``put`` returns: kill -9 in that gap loses it, as a power cut loses the last commits with
  ``sync="normal"``. Its seq is not lost: a restart resumes at the outbox's stored
  ``next_seq``, so the cloud still sees no gap.
* A failed commit (a full disk, a busy file) is retried every ``RETRY_S`` with the same
  events in the same order, logged once per failure streak and counted in ``failures``; the
  outbox's own bounds free room meanwhile. Handed-over events wait in memory up to
  ``MAX_PENDING``; past that ``put`` waits for room (bounded memory, and the status's
  counters show why the pipeline is slow).
* ``done(size)`` is called on this writer's thread with the bytes stored (what the pipeline
  counts as sent), once per hand-over, after its commit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

from edge_agent.delivery.outbox import Outbox
from shared.errors import StorageError
from shared.messages import Event, PipelineSummary

log = logging.getLogger(__name__)

MAX_PENDING = 10_000
"""Events handed over and not stored yet past which ``put`` waits."""
LINGER_S = 0.02
"""How long the writer lets hand-overs gather after the first before it commits them (cut
short by ``flush``, ``close`` or ``LINGER_EVENTS``). The writer's Python work (encoding, the
transaction) holds the GIL that the pipelines' threads wait for after each inference: in an
incident, committing each event as it came cost the scorer's pipeline ~100 µs an event;
gathered for 20 ms, the fixed cost of a transaction is paid once for the lot (Kafka's
``linger.ms``). Local actions never wait for it: they have the events before the hand-over."""
LINGER_EVENTS = 256
"""Events pending past which the writer stops lingering and commits."""
RETRY_S = 0.5
"""Wait between two attempts at a commit that failed."""
CLOSE_ATTEMPTS = 3
"""Commits tried on ``close`` before what is still pending is given up (and logged)."""


@dataclass(frozen=True, slots=True)
class _Handover:
    """Events of one pipeline, or one summary, and whom to tell their stored size."""

    done: Callable[[int], None]
    events: Sequence[Event] = ()
    summary: PipelineSummary | None = None


class OutboxWriter:
    """The one thread that writes to the outbox for every pipeline (start, hand over, close)."""

    def __init__(
        self, outbox: Outbox, *, max_pending: int = MAX_PENDING, linger_s: float = LINGER_S
    ) -> None:
        self.outbox = outbox
        self.failures = 0
        """Commits that failed (each retried)."""
        self._max_pending = max_pending
        self._queue: list[_Handover] = []
        self._pending = 0  # events in the queue and in the batch being stored
        self._cond = threading.Condition()
        self._storing = False  # a batch is taken and not stored yet
        self._closing = False
        self._linger_s = linger_s
        self._hurry = threading.Event()  # stop lingering: a flush, a close or a full batch
        self._failing = False
        self._thread: threading.Thread | None = None

    def __enter__(self) -> OutboxWriter:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def pending(self) -> int:
        """Events handed over and not stored yet."""
        return self._pending

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="outbox-writer", daemon=True)
        self._thread.start()

    def put(self, events: Sequence[Event], done: Callable[[int], None]) -> None:
        """Hand ``events`` over to be stored together, in order; returns at once unless
        ``MAX_PENDING`` events wait already."""
        with self._cond:
            while self._pending >= self._max_pending and not self._closing:
                self._cond.wait()
            self._queue.append(_Handover(done, events=events))
            self._pending += len(events)
            self._cond.notify_all()
            if self._pending >= LINGER_EVENTS:
                self._hurry.set()

    def put_summary(self, summary: PipelineSummary, done: Callable[[int], None]) -> None:
        """Hand a summary over; it is stored behind the events handed over before it."""
        with self._cond:
            self._queue.append(_Handover(done, summary=summary))
            self._cond.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything handed over so far is stored; False on timeout."""
        self._hurry.set()
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._storing, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Store what is pending, then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._hurry.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        attempts = 0
        batch: list[_Handover] = []
        while True:
            with self._cond:
                if not batch:
                    self._cond.wait_for(lambda: bool(self._queue) or self._closing)
                    if not self._queue:
                        return  # closing, and everything is stored
            if not batch:
                self._hurry.wait(self._linger_s)  # outside the lock: put never waits on it
                self._hurry.clear()
                with self._cond:
                    batch, self._queue, self._storing = self._queue, [], True
            if self._store(batch):
                attempts = 0
                with self._cond:
                    self._pending -= sum(len(h.events) for h in batch)
                    self._storing = False
                    self._cond.notify_all()
                batch = []
                continue
            attempts += 1
            if self._closing and attempts >= CLOSE_ATTEMPTS:
                log.error("outbox writer: gave up %d hand-over(s) on close", len(batch))
                return
            time.sleep(RETRY_S)  # new hand-overs must not hurry a retry of a failing disk

    def _store(self, batch: list[_Handover]) -> bool:
        """Store ``batch`` (its events in one transaction, then its summaries in order);
        call each ``done``. False, logged on the first failure of a streak, if it failed."""
        groups = [h for h in batch if h.summary is None]
        try:
            sizes = self.outbox.put_groups([h.events for h in groups]) if groups else []
        except StorageError as exc:
            return self._failed(exc)
        except Exception:  # not the storage: retrying cannot help, and the thread must live
            self.failures += 1
            log.exception("outbox writer: dropped %d hand-over(s) it could not store", len(batch))
            return True
        for handover, size in zip(groups, sizes, strict=True):
            handover.done(size)
        for handover in batch:
            if handover.summary is not None:
                try:
                    handover.done(self.outbox.put_summary(handover.summary))
                except StorageError as exc:  # a summary is not retried: the next one covers it
                    self._failed(exc)
        if self._failing:
            self._failing = False
            log.info("outbox writer: storing works again")
        return True

    def _failed(self, exc: StorageError) -> bool:
        self.failures += 1
        if not self._failing:
            self._failing = True
            log.error("outbox writer: %s; retrying every %g s", exc, RETRY_S)
        return False
