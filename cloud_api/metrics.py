"""Prometheus metrics of one app, in a registry the app owns (never the global one).

Every label value comes from a bounded set, whatever clients send: HTTP requests are counted
by method (the standard ones, every other method as ``other``), route template (never the
raw path: ``unmatched`` for a request no route answered) and status.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud_api.ingest.writers import BatchStats

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"
UNMATCHED = "unmatched"


class Metrics:
    """Counters for ingest, retention and HTTP; ``observe_*`` are the workers' observers."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.events_ingested = Counter(
            "aiot_ingest_events", "Events stored for the first time", registry=self.registry
        )
        self.duplicates = Counter(
            "aiot_ingest_duplicate_events",
            "Events received again and not stored twice",
            registry=self.registry,
        )
        self.summaries_ingested = Counter(
            "aiot_ingest_summaries",
            "Pipeline summaries stored for the first time",
            registry=self.registry,
        )
        self.summary_duplicates = Counter(
            "aiot_ingest_duplicate_summaries",
            "Pipeline summaries received again and not stored twice",
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "aiot_ingest_dead_letters", "Messages stored as dead letters", registry=self.registry
        )
        self.messages = Counter(
            "aiot_ingest_messages", "MQTT messages committed", registry=self.registry
        )
        self.batch_messages = Histogram(
            "aiot_ingest_batch_messages",
            "MQTT messages per ingest transaction",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
            registry=self.registry,
        )
        self.retention_deleted = Counter(
            "aiot_retention_deleted_rows",
            "Rows deleted by retention, by table",
            ["table"],
            registry=self.registry,
        )
        self.http_requests = Counter(
            "aiot_http_requests",
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            registry=self.registry,
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

    def observe_retention(self, table: str, rows: int) -> None:
        """Called by retention after each committed DELETE batch."""
        self.retention_deleted.labels(table).inc(rows)

    def observe_request(self, method: str, route: str, status: int) -> None:
        """Count one HTTP request; ``route`` is a route template or ``UNMATCHED``."""
        method = method if method in METHODS else OTHER_METHOD
        self.http_requests.labels(method, route, str(status)).inc()


def route_label(scope: Scope) -> str:
    """The matched route's path template (``/api/v1/agents/{agent_id}``), else ``UNMATCHED``.

    ``UNMATCHED`` covers what was answered before or without a route: a 404, and the guard's
    401 (``cloud_api/guard.py``), which comes before routing.
    """
    route = scope.get("route")  # set by the router in the scope we share
    return str(getattr(route, "path", UNMATCHED))


class CountRequests:
    """ASGI middleware: counts every request once it is answered, in ``Metrics``."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets if an exception escapes before a response

        async def send_watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_watched)
        finally:
            self.metrics.observe_request(scope["method"], route_label(scope), status)
