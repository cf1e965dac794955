"""Running local actions: act on an event within milliseconds, without waiting for the cloud.

``Actions.submit`` only queues, so a pipeline never waits for an action. Each configured
action (``edge_agent.delivery.actions``) has its own bounded queue and worker thread: its
events run in order (a siren's ``end`` never overtakes its ``start``), and a slow webhook
never delays another action. When a queue is full the action is dropped and counted (one
that fires minutes late is worse than none). Every completed action records its latency
from the event's capture time (``Event.ts``) to its completion, kept for the last ``keep``
actions (p50/p99 for the benchmark) and in a Prometheus histogram.

A worker counts an ``ActionError`` and logs when an action starts failing and when it
recovers.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import Counter as PromCounter

from edge_agent.delivery.action_config import ActionConfig
from edge_agent.delivery.actions import ACTIONS, Action, ActionError, ActionFactory
from edge_agent.delivery.selection import EventSelector
from shared.messages import Event

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_POLL_S = 0.05
"""How often an idle worker looks at the stop event."""


@dataclass(slots=True)
class _Bound:
    """An action with its pipeline, its event filter and its own queue."""

    pipeline: str
    type: str
    action: Action
    selector: EventSelector
    queue: queue.Queue[Event]
    failing: bool = False
    full: bool = False

    def wants(self, event: Event) -> bool:
        return self.selector.wants(event)


@dataclass(slots=True)
class ActionCounters:
    """What the actions did since the agent started."""

    completed: int = 0
    failed: int = 0
    dropped: int = 0


class Actions:
    """Every pipeline's actions, a bounded queue and the worker threads that run them."""

    def __init__(
        self,
        agent_id: str,
        pipelines: Mapping[str, Sequence[ActionConfig]],
        registry: CollectorRegistry,
        *,
        queue_size: int = 64,
        keep: int = 1000,
        clock: Callable[[], float] = time.time,
        factories: Mapping[str, ActionFactory] = ACTIONS,
    ) -> None:
        self._bound: dict[str, list[_Bound]] = {
            pipeline: [
                _Bound(
                    pipeline,
                    c.type,
                    factories[c.type](c, f"aiot-action-{agent_id}-{pipeline}-{i}"),
                    c.selector(),
                    queue.Queue(maxsize=queue_size),
                )
                for i, c in enumerate(configs)
            ]
            for pipeline, configs in pipelines.items()
            if configs
        }
        self._stop = threading.Event()
        self._drain_until = float("inf")
        self._threads: list[threading.Thread] = []
        self._clock = clock
        self._lock = threading.Lock()  # workers update counters and latencies together
        self._latencies: deque[float] = deque(maxlen=keep)
        self.counters = ActionCounters()
        self._histogram = Histogram(
            "aiot_edge_action_latency_seconds",
            "From an event's capture time to its local action's completion",
            ["pipeline", "type"],
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )
        self._outcomes = PromCounter(
            "aiot_edge_actions",
            "Local actions by outcome (completed, failed, dropped: the queue was full)",
            ["pipeline", "type", "outcome"],
            registry=registry,
        )

    def start(self) -> None:
        """Open every action's connection (in the background) and start its worker."""
        for i, bound in enumerate(self._all()):
            bound.action.start()
            thread = threading.Thread(
                target=self._work, args=(bound,), name=f"action-{bound.pipeline}-{i}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, grace_s: float = 2.0) -> None:
        """Run what is queued for up to ``grace_s`` (the end events of a shutdown), drop the
        rest, join the workers and close the actions. Safe to call more than once."""
        self._drain_until = time.monotonic() + grace_s
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        for bound in self._all():
            bound.action.stop()

    def submit(self, events: Iterable[Event]) -> None:
        """Queue the actions these events call for; never blocks (a full queue drops)."""
        if not self._bound:
            return
        for event in events:
            for bound in self._bound.get(event.pipeline, ()):
                if bound.wants(event):
                    self._put(bound, event)

    def latencies(self) -> list[float]:
        """The last ``keep`` latencies in seconds, oldest first."""
        with self._lock:
            return list(self._latencies)

    def percentiles(self) -> tuple[float, float]:
        """p50 and p99 of the kept latencies in seconds (0, 0 before the first action)."""
        values = sorted(self.latencies())
        if not values:
            return 0.0, 0.0

        def at(q: float) -> float:
            return values[min(len(values) - 1, int(q * len(values)))]

        return at(0.50), at(0.99)

    def _all(self) -> list[_Bound]:
        return [b for bound in self._bound.values() for b in bound]

    def _put(self, bound: _Bound, event: Event) -> None:
        try:
            bound.queue.put_nowait(event)
        except queue.Full:
            with self._lock:
                self.counters.dropped += 1
            self._outcomes.labels(bound.pipeline, bound.type, "dropped").inc()
            if not bound.full:
                bound.full = True
                log.warning(
                    "pipeline %s: %s action is behind: dropping", bound.pipeline, bound.type
                )
            return
        if bound.full:
            bound.full = False
            log.info("pipeline %s: %s action keeps up again", bound.pipeline, bound.type)

    def _work(self, bound: _Bound) -> None:
        while True:
            try:
                event = bound.queue.get(timeout=_POLL_S)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if self._stop.is_set() and time.monotonic() >= self._drain_until:
                with self._lock:
                    self.counters.dropped += 1
                self._outcomes.labels(bound.pipeline, bound.type, "dropped").inc()
                continue
            self._execute(bound, event)

    def _execute(self, bound: _Bound, event: Event) -> None:
        try:
            bound.action.run(event)
        except ActionError as exc:
            with self._lock:
                self.counters.failed += 1
            self._outcomes.labels(bound.pipeline, bound.type, "failed").inc()
            if not bound.failing:
                bound.failing = True
                log.error("pipeline %s: %s action failed: %s", bound.pipeline, bound.type, exc)
            return
        # A source ahead of the wall clock (a simulation at full speed) would read negative.
        latency = max(0.0, self._clock() - event.ts.timestamp())
        with self._lock:
            self._latencies.append(latency)
            self.counters.completed += 1
        self._histogram.labels(bound.pipeline, bound.type).observe(latency)
        self._outcomes.labels(bound.pipeline, bound.type, "completed").inc()
        if bound.failing:
            bound.failing = False
            log.info("pipeline %s: %s action works again", bound.pipeline, bound.type)
