"""Prometheus metrics of one process, in a registry it owns (never the global one).

Each worker owns its family (``IngestMetrics``, ``RolloutMetrics``, ``HttpMetrics``); a
process registers the families of the workers it runs: the API all of them, a stand-alone
ingest worker its own (``shared/probes.py`` serves them). Fleet gauges (agents online,
deployments by state, each agent's outbox) are read from the database at scrape time by
``FleetCollector``. Under ``aiot cloud serve --workers N`` prometheus-client's multiprocess
mode (``PROMETHEUS_MULTIPROC_DIR``) sums the counters of every worker process.

Every label value comes from a bounded set, whatever clients send: HTTP requests are counted
by method (the standard ones, every other method as ``other``), route template (never the
raw path: ``unmatched`` for a request no route answered) and status.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud_api.escalation.metrics import EscalationMetrics, escalation_gauges
from cloud_api.ingest.writers import BatchStats
from cloud_api.liveness import liveness
from cloud_api.queries.agents import list_agents
from cloud_api.queries.fleet import deployments_by_state
from cloud_api.rollout.store import DEPLOYMENT_STATES
from shared.messages import utcnow

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"
UNMATCHED = "unmatched"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus-client's own switch: set, every process writes its values to files there."""
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def multiprocess_dir() -> Path | None:
    """The directory of multiprocess mode, when this process runs in it."""
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


class IngestMetrics:
    """What an ingest worker stored; ``observe_batch`` is its observer."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, registry=registry)

        self.events_ingested = counter("aiot_ingest_events", "Events stored for the first time")
        self.duplicates = counter(
            "aiot_ingest_duplicate_events", "Events received again and not stored twice"
        )
        self.summaries_ingested = counter(
            "aiot_ingest_summaries", "Pipeline summaries stored for the first time"
        )
        self.summary_duplicates = counter(
            "aiot_ingest_duplicate_summaries",
            "Pipeline summaries received again and not stored twice",
        )
        self.dead_letters = counter("aiot_ingest_dead_letters", "Messages stored as dead letters")
        self.messages = counter("aiot_ingest_messages", "MQTT messages committed")
        self.batch_messages = Histogram(
            "aiot_ingest_batch_messages",
            "MQTT messages per ingest transaction",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
            registry=registry,
        )

    def observe_batch(self, stats: BatchStats) -> None:
        """Called by the ingest writer after each commit."""
        self.messages.inc(stats.messages)
        self.events_ingested.inc(stats.events_stored)
        self.duplicates.inc(stats.duplicates)
        self.summaries_ingested.inc(stats.summaries_stored)
        self.summary_duplicates.inc(stats.summary_duplicates)
        self.dead_letters.inc(stats.dead_letters)
        self.batch_messages.observe(stats.messages)


class RolloutMetrics:
    """What the rollout worker did; ``observe_tick`` is its observer."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.ticks = Counter("aiot_rollout_ticks", "Rollout ticks run", registry=registry)
        self.tick_failures = Counter(
            "aiot_rollout_tick_failures", "Rollout ticks that failed", registry=registry
        )
        self.published = Counter(
            "aiot_rollout_desired_published", "Desired states published", registry=registry
        )

    def observe_tick(self, published: int | None) -> None:
        """One tick: how many desired states it published, None if it failed."""
        self.ticks.inc()
        if published is None:
            self.tick_failures.inc()
        else:
            self.published.inc(published)


class HttpMetrics:
    """Requests by method, route template and status, and their latency by route template."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "aiot_http_requests",
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "aiot_http_request_duration_seconds",
            "Time to answer an HTTP request (a stream: until it ended), by route template",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One answered request; ``route`` is a route template or ``UNMATCHED``."""
        method = method if method in METHODS else OTHER_METHOD
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)


class FleetCollector:
    """Gauges read from the database at scrape time: the same answer from any replica."""

    def __init__(self, make_session: Callable[[], Session], *, grace: float) -> None:
        self._make_session = make_session
        self._grace = grace

    def collect(self) -> Iterator[Metric]:
        now = utcnow()
        with self._make_session() as session:
            agents = list_agents(session)
            deployments = deployments_by_state(session)
            escalations = list(escalation_gauges(session))
        judged = [(row, liveness(row, now=now, grace=self._grace)) for row in agents]
        by_state = GaugeMetricFamily("aiot_agents", "Agents by state", labels=["state"])
        for state in ("online", "offline"):
            by_state.add_metric([state], sum(1 for _, j in judged if j.state == state))
        yield by_state
        up = GaugeMetricFamily(
            "aiot_agent_up", "1 while an agent is online, 0 when offline", labels=["agent_id"]
        )
        for row, judgement in judged:
            up.add_metric([row.agent_id], int(judgement.online))
        yield up
        outbox = GaugeMetricFamily(
            "aiot_agent_outbox_depth",
            "Items waiting in each online agent's outbox, as it last reported",
            labels=["agent_id"],
        )
        rtt = GaugeMetricFamily(
            "aiot_agent_ack_rtt_p99_seconds",
            "Each online agent's publish -> cloud ack round trip (p99), as it last reported",
            labels=["agent_id"],
        )
        link = GaugeMetricFamily(
            "aiot_agent_link_mbps",
            "Each online agent's link rate measured from its acks (Mbit/s), as it last reported",
            labels=["agent_id"],
        )
        for row, judgement in judged:
            if judgement.online:
                outbox.add_metric([row.agent_id], row.last_status.get("outbox_depth", 0))
                for family, key in ((rtt, "ack_rtt_p99_s"), (link, "link_mbps_measured")):
                    if (value := row.last_status.get(key)) is not None:
                        family.add_metric([row.agent_id], value)
        yield outbox
        yield rtt
        yield link
        states = GaugeMetricFamily("aiot_deployments", "Deployments by state", labels=["state"])
        for state in DEPLOYMENT_STATES:
            states.add_metric([state], deployments.get(state, 0))
        yield states
        yield from escalations


class Metrics:
    """The API process's metrics: ingest, rollout, retention and HTTP, plus the fleet."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.ingest = IngestMetrics(self.registry)
        self.rollout = RolloutMetrics(self.registry)
        self.http = HttpMetrics(self.registry)
        self.escalations = EscalationMetrics(self.registry)
        self.retention_deleted = Counter(
            "aiot_retention_deleted_rows",
            "Rows deleted by retention, by table",
            ["table"],
            registry=self.registry,
        )
        self._fleet: Collector | None = None

    def watch_fleet(self, fleet: Collector) -> None:
        """Export the fleet gauges too (once the database is there), instead of any earlier."""
        self.unwatch_fleet()
        self.registry.register(fleet)
        self._fleet = fleet

    def unwatch_fleet(self) -> None:
        if self._fleet is not None:
            self.registry.unregister(self._fleet)
            self._fleet = None

    def observe_batch(self, stats: BatchStats) -> None:
        """Called by the ingest writer after each commit."""
        self.ingest.observe_batch(stats)

    def observe_retention(self, table: str, rows: int) -> None:
        """Called by retention after each committed DELETE batch."""
        self.retention_deleted.labels(table).inc(rows)

    def exposition(self) -> bytes:
        """The text format: this process's registry, or every worker's in multiprocess mode."""
        return exposition(self.registry, extra=self._fleet)


def exposition(registry: CollectorRegistry, *, extra: Collector | None = None) -> bytes:
    """``registry`` in the text format; in multiprocess mode, the sum over every process
    (whose values live in files) plus ``extra``, a collector read at scrape time."""
    directory = multiprocess_dir()
    if directory is None:
        return generate_latest(registry)
    merged = CollectorRegistry()
    MultiProcessCollector(merged, path=str(directory))  # type: ignore[no-untyped-call]
    if extra is not None:
        merged.register(extra)
    return generate_latest(merged)


def route_label(scope: Scope) -> str:
    """The matched route's path template (``/api/v1/agents/{agent_id}``), else ``UNMATCHED``.

    ``UNMATCHED`` covers what was answered before or without a route: a 404, and the guard's
    401 (``cloud_api/guard.py``), which comes before routing.
    """
    route = scope.get("route")  # set by the router in the scope we share
    return str(getattr(route, "path", UNMATCHED))


class CountRequests:
    """ASGI middleware: counts and times every request once it is answered."""

    def __init__(self, app: ASGIApp, *, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets if an exception escapes before a response
        started = time.perf_counter()

        async def send_watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_watched)
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.observe_request(scope["method"], route_label(scope), status, elapsed)
