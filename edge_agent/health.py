"""Health: Prometheus metrics read from the agent's own counters, and the local exporter.

Metrics are produced by a collector that reads the counters at scrape time, so the hot
path only increments plain integers and pays nothing for Prometheus. The registry is
passed in (no module-level global), so tests and several agents in one process never clash.
The exporter (``shared.probes``, as the cloud's workers have) also answers the probes:
``/livez`` (the agent works; the same check feeds systemd's watchdog) and ``/readyz`` (it
reaches the broker), 200 or 503 with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from pydantic import Field

from edge_agent.config_types import StrictConfig
from shared.messages import AgentStatus
from shared.probes import Check, ProbeServer

log = logging.getLogger(__name__)

DEFAULT_PORT = 9464


class MetricsConfig(StrictConfig):
    """The Prometheus exporter and probes, on by default on 127.0.0.1; port 0 turns it off."""

    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    host: str = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class UplinkHealth:
    """What the uplink reports beyond the status message."""

    connected: bool
    batches_published: int
    events_acked: int
    publish_failures: int
    inflight_batches: int
    summaries_acked: int = 0
    unacked_batches: int = 0
    resends: int = 0
    rejected: int = 0
    no_subscribers: int = 0


@dataclass(frozen=True, slots=True)
class UpdateHealth:
    """What the model updater has done since the agent started."""

    outcomes: dict[str, int]
    """Finished updates by outcome: running, failed, rolled_back."""
    swaps: int
    refused_messages: int


class AgentCollector:
    """A Prometheus collector over the agent's status snapshot."""

    def __init__(
        self,
        status: Callable[[], AgentStatus],
        uplink: Callable[[], UplinkHealth | None],
        outbox_dropped: Callable[[], int],
        updates: Callable[[], UpdateHealth | None] = lambda: None,
    ) -> None:
        self._status = status
        self._uplink = uplink
        self._dropped = outbox_dropped
        self._updates = updates

    def collect(self) -> Iterator[Metric]:
        status = self._status()
        yield from _pipeline_metrics(status)
        yield from _collection_metrics(status)
        yield from _escalation_metrics(status)
        yield from _agent_metrics(status, self._dropped())
        updates = self._updates()
        if updates is not None:
            yield from _update_metrics(updates)
        uplink = self._uplink()
        if uplink is not None:
            yield from _uplink_metrics(uplink)
        yield _rtt_metric(status)
        yield from link_metrics(status)


def _pipeline_metrics(status: AgentStatus) -> Iterator[Metric]:
    """One counter family per pipeline counter, labelled with the model that runs."""
    per_pipeline = {
        "samples_in": "Windows read from the source",
        "inferences": "Windows run through the model",
        "events_out": "Events handed to the outbox",
        "errors": "Failed inferences or outbox writes",
        "raw_bytes": "Bytes read from the source",
        "sent_bytes": "Encoded bytes of events and summaries handed to the outbox",
        "filtered": "Events the report filters held back (rate limit, dedup, intervals)",
    }
    for field, help_text in per_pipeline.items():
        family = CounterMetricFamily(
            f"aiot_edge_pipeline_{field}", help_text, labels=["pipeline", "model", "version"]
        )
        for p in status.pipelines:
            name, version = (p.model.name, p.model.version) if p.model else ("", "")
            family.add_metric([p.name, name, version], getattr(p, field))
        yield family


def _collection_metrics(status: AgentStatus) -> Iterator[Metric]:
    """Samples kept by reason, capped, waiting and uploaded, per pipeline; the spool."""
    kept = CounterMetricFamily(
        "aiot_edge_samples_kept", "Raw inputs kept for the cloud", labels=["pipeline", "reason"]
    )
    for p in status.pipelines:
        for reason, count in sorted(p.samples_kept.items()):
            kept.add_metric([p.name, reason], count)
    yield kept
    per_pipeline = {
        "samples_capped": (CounterMetricFamily, "Inputs a collection cap refused"),
        "spool_depth": (GaugeMetricFamily, "Samples waiting in the spool for upload"),
        "samples_uploaded": (CounterMetricFamily, "Samples the cloud stored"),
        "sample_bytes_uploaded": (CounterMetricFamily, "Blob bytes of the samples uploaded"),
    }
    for field, (kind, help_text) in per_pipeline.items():
        family = kind(f"aiot_edge_pipeline_{field}", help_text, labels=["pipeline"])
        for p in status.pipelines:
            family.add_metric([p.name], getattr(p, field))
        yield family
    yield _gauge("aiot_edge_spool_depth", "Samples waiting for upload", status.spool_depth)
    yield _gauge("aiot_edge_spool_bytes", "Blob bytes waiting for upload", status.spool_bytes)
    yield _counter(
        "aiot_edge_spool_dropped",
        "Samples dropped unsent by the spool bounds",
        status.spool_dropped,
    )


def _escalation_metrics(status: AgentStatus) -> Iterator[Metric]:
    """What each pipeline's ``escalate:`` did: sent, answered, agreed, dropped, refused."""
    per_pipeline = {
        "escalated": "Inputs escalated to the cloud model",
        "escalations_answered": "Escalations the cloud model answered",
        "escalations_agreed": "Answered escalations whose cloud label was the edge's",
        "escalations_dropped_budget": "Escalations the per-minute budget dropped",
        "escalations_dropped_offline": "Escalations dropped while the cloud did not answer",
        "escalations_queued": "Escalations queued while the uplink was offline",
        "escalations_refused": "Escalations refused (by the cloud, or the privacy policy)",
    }
    for field, help_text in per_pipeline.items():
        family = CounterMetricFamily(f"aiot_edge_pipeline_{field}", help_text, labels=["pipeline"])
        for p in status.pipelines:
            family.add_metric([p.name], getattr(p, field))
        yield family


def _agent_metrics(status: AgentStatus, dropped: int) -> Iterator[Metric]:
    """The outbox and the uptime."""
    yield _gauge(
        "aiot_edge_outbox_depth",
        "Events and summaries waiting in the outbox",
        status.outbox_depth,
    )
    yield _gauge(
        "aiot_edge_outbox_oldest_age_seconds",
        "Age of the oldest waiting event",
        status.outbox_oldest_age_s,
    )
    yield _counter("aiot_edge_outbox_dropped", "Events dropped by the outbox bounds", dropped)
    yield _gauge("aiot_edge_uptime_seconds", "Seconds since the agent started", status.uptime_s)


def _update_metrics(updates: UpdateHealth) -> Iterator[Metric]:
    """What the model updater has done."""
    outcomes = CounterMetricFamily(
        "aiot_edge_model_updates", "Model updates finished, by outcome", labels=["outcome"]
    )
    for outcome, count in sorted(updates.outcomes.items()):
        outcomes.add_metric([outcome], count)
    yield outcomes
    yield _counter("aiot_edge_model_swaps", "Model swaps (installs and rollbacks)", updates.swaps)
    yield _counter(
        "aiot_edge_desired_refused",
        "Desired-state messages that did not validate or named another agent",
        updates.refused_messages,
    )


def _uplink_metrics(uplink: UplinkHealth) -> Iterator[Metric]:
    """The broker connection and delivery counters."""
    yield _gauge("aiot_edge_mqtt_connected", "1 when connected", int(uplink.connected))
    yield _counter(
        "aiot_edge_batches_published", "Event batches published", uplink.batches_published
    )
    yield _counter(
        "aiot_edge_events_acked",
        "Events the cloud acknowledged as stored",
        uplink.events_acked,
    )
    yield _counter(
        "aiot_edge_publish_failures",
        "Batches refused or not queued",
        uplink.publish_failures,
    )
    yield _counter(
        "aiot_edge_summaries_acked",
        "Pipeline summaries the cloud acknowledged as stored",
        uplink.summaries_acked,
    )
    yield _gauge("aiot_edge_inflight_batches", "Batches awaiting PUBACK", uplink.inflight_batches)
    yield _gauge(
        "aiot_edge_unacked_batches",
        "Batches published and not yet acknowledged by the cloud",
        uplink.unacked_batches,
    )
    yield _counter(
        "aiot_edge_batch_resends",
        "Batches sent again (no ack from the cloud in time, or a reconnect)",
        uplink.resends,
    )
    yield _counter(
        "aiot_edge_rejected",
        "Events and summaries the cloud dead-lettered (dropped from the outbox)",
        uplink.rejected,
    )
    yield _counter(
        "aiot_edge_puback_no_subscribers",
        "PUBACKs with MQTT 5 reason 16: the broker had no subscriber for the batch",
        uplink.no_subscribers,
    )


def _rtt_metric(status: AgentStatus) -> Metric:
    """The publish -> cloud ack round trip, by quantile (none before the first ack)."""
    rtt = GaugeMetricFamily(
        "aiot_edge_ack_rtt_seconds",
        "Publish -> cloud ack round trip of recent batches",
        labels=["quantile"],
    )
    for quantile, value in (("0.5", status.ack_rtt_p50_s), ("0.99", status.ack_rtt_p99_s)):
        if value is not None:
            rtt.add_metric([quantile], value)
    return rtt


def link_metrics(status: AgentStatus) -> Iterator[Metric]:
    """The link rate the agent measured from its acks while draining a backlog (none while
    it has not: its link was never the limit)."""
    if status.link_mbps_measured is not None:
        yield _gauge(
            "aiot_edge_link_mbps",
            "Link rate measured from the cloud's acks while a backlog drained, Mbit/s",
            status.link_mbps_measured,
        )


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_text, value=value)


def _counter(name: str, help_text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, help_text, value=value)


class MetricsServer(ProbeServer):
    """The HTTP exporter and probes on ``host:port`` (port 0 means none).

    A port another process holds is logged and skipped: the agent's work (events to the
    cloud, local actions) matters more than its local metrics.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str,
        port: int,
        *,
        live: Check = lambda: None,
        ready: Check = lambda: None,
    ) -> None:
        super().__init__(registry, host=host, port=port, live=live, ready=ready)
        self._address = (host, port)

    def start(self) -> None:
        host, port = self._address
        if port == 0:
            return
        try:
            super().start()
        except OSError as exc:
            log.warning(
                "metrics exporter off: cannot listen on %s:%d (%s); set metrics.port to a "
                "free port, or 0 to turn it off",
                host, port, exc.strerror or exc,
            )  # fmt: skip
