"""Prometheus metrics of one app, in a registry the app owns (never the global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from cloud_api.ingest import BatchStats


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
