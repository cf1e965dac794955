"""Local actions: act on an event within milliseconds, without waiting for the cloud.

A pipeline's ``actions:`` list says what to do on which events (``on`` states, optional
``labels``); ``ACTIONS`` builds each from its config ``type``:

* ``mqtt``: publish a small JSON of the event to a topic on a local broker (a siren, a PLC
  gateway), with its own paho client that connects in the background;
* ``webhook``: POST that JSON to a URL (stdlib ``urllib``: the edge has no HTTP client
  dependency), one retry on a connection error or a 5xx, none on a 4xx;
* ``command``: run an argv list, never through a shell, with the event's fields in
  ``AIOT_EVENT_*`` environment variables.

``Actions.submit`` only queues, so a pipeline never waits for an action. Each configured
action has its own bounded queue and worker thread: its events run in order (a siren's
``end`` never overtakes its ``start``), and a slow webhook never delays another action. When
a queue is full the action is dropped and counted (one that fires minutes late is worse
than none). Every completed action records its
latency from the event's capture time (``Event.ts``) to its completion, kept for the last
``keep`` actions (p50/p99 for the benchmark) and in a Prometheus histogram.

Errors: an action raises ``ActionError`` (third-party errors are mapped in each action); the
worker counts it and logs when an action starts failing and when it recovers.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import Counter as PromCounter

from edge_agent.config import (
    ActionConfig,
    CommandActionConfig,
    MqttActionConfig,
    WebhookActionConfig,
)
from shared.errors import AiotError
from shared.messages import Event
from shared.urls import parse_mqtt_url

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_POLL_S = 0.05
"""How often an idle worker looks at the stop event."""


class ActionError(AiotError):
    """A local action did not complete; the message says why."""


def event_payload(event: Event) -> dict[str, Any]:
    """The small JSON an action sends: what a siren or a PLC needs, not the attributes."""
    return {
        "id": event.id,
        "pipeline": event.pipeline,
        "kind": event.kind,
        "state": event.state,
        "label": event.label,
        "score": event.score,
        "ts": event.ts.isoformat(),
        "seq": event.seq,
        "model": event.model.name,
        "model_version": event.model.version,
    }


class Action(Protocol):
    """One configured action; ``run`` is called from a worker thread, one event at a time."""

    def start(self) -> None:
        """Open what the action needs (a connection), without blocking."""
        ...

    def run(self, event: Event) -> None:
        """Act on one event; raises ActionError."""
        ...

    def stop(self) -> None:
        """Close what ``start`` opened."""
        ...


class MqttAction:
    """Publish to a local broker; QoS 1 completes at the PUBACK, QoS 0 once sent."""

    def __init__(self, config: MqttActionConfig, name: str) -> None:
        self._config = config
        broker = parse_mqtt_url(config.url)
        self._host = broker.host
        self._port = broker.port
        self._connected = False
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv311, clean_session=True
        )
        if broker.tls:  # mqtts://: the system's CAs, hostname checked
            self._client.tls_set()
        if broker.username is not None:
            self._client.username_pw_set(broker.username, broker.password)
        self._client.reconnect_delay_set(1, 30)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect

    @property
    def connected(self) -> bool:
        return self._connected

    def start(self) -> None:
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()

    def run(self, event: Event) -> None:
        if not self._connected:
            raise ActionError(f"not connected to {self._host}:{self._port}")
        cfg = self._config
        payload = json.dumps(event_payload(event), separators=(",", ":"))
        info = self._client.publish(cfg.topic, payload, qos=cfg.qos, retain=cfg.retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ActionError(f"publish to {cfg.topic} failed: {mqtt.error_string(info.rc)}")
        info.wait_for_publish(timeout=cfg.timeout_s)
        if not info.is_published():
            raise ActionError(f"no acknowledgement for {cfg.topic} within {cfg.timeout_s} s")

    def stop(self) -> None:
        self._connected = False  # our own disconnect is not worth a warning
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self._connected = not reason.is_failure
        if self._connected:
            log.info("action broker %s:%s connected", self._host, self._port)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if self._connected:
            log.warning("action broker %s:%s disconnected: %s", self._host, self._port, reason)
        self._connected = False


class WebhookAction:
    """POST the event's JSON; a 2xx completes it."""

    def __init__(self, config: WebhookActionConfig, name: str) -> None:
        self._config = config

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def run(self, event: Event) -> None:
        cfg = self._config
        body = json.dumps(event_payload(event)).encode()
        headers = {"Content-Type": "application/json", **cfg.headers}
        error = ""
        # The config only accepts http(s) URLs, so urllib's file: and custom schemes are out.
        for _attempt in range(2):  # one retry, for what a retry can fix
            request = urllib.request.Request(cfg.url, body, headers, method="POST")  # noqa: S310
            try:
                with urllib.request.urlopen(request, timeout=cfg.timeout_s) as response:  # noqa: S310
                    response.read()
                return
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    raise ActionError(f"POST {cfg.url}: HTTP {exc.code}") from None
                error = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:  # refused, unreachable, timed out
                error = str(getattr(exc, "reason", exc))
        raise ActionError(f"POST {cfg.url}: {error}")


class CommandAction:
    """Run ``argv`` with AIOT_EVENT_* set; exit status 0 completes it."""

    def __init__(self, config: CommandActionConfig, name: str) -> None:
        self._config = config

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def run(self, event: Event) -> None:
        cfg = self._config
        env = dict(os.environ)
        payload = event_payload(event)
        env.update({f"AIOT_EVENT_{k.upper()}": str(v) for k, v in payload.items()})
        env["AIOT_EVENT_JSON"] = json.dumps(payload)
        try:
            done = subprocess.run(
                cfg.argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=cfg.timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ActionError(f"{cfg.argv[0]}: killed after {cfg.timeout_s} s") from None
        except OSError as exc:
            raise ActionError(f"{cfg.argv[0]}: {exc.strerror}") from None
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip()[-200:]
            raise ActionError(f"{cfg.argv[0]}: exit status {done.returncode}: {tail}")


ActionFactory = Callable[[Any, str], Action]

ACTIONS: dict[str, ActionFactory] = {
    "mqtt": MqttAction,
    "webhook": WebhookAction,
    "command": CommandAction,
}
"""Every action by its config ``type``."""


@dataclass(slots=True)
class _Bound:
    """An action with its pipeline, its event filter and its own queue."""

    pipeline: str
    type: str
    action: Action
    on: frozenset[str]
    labels: frozenset[str] | None
    queue: queue.Queue[Event]
    failing: bool = False
    full: bool = False

    def wants(self, event: Event) -> bool:
        return event.state in self.on and (self.labels is None or event.label in self.labels)


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
                    frozenset(c.on),
                    frozenset(c.labels) if c.labels is not None else None,
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
