"""The escalation runner's Prometheus family: answers per agent and pipeline by outcome
(agreement with the edge, or the kind of refusal), repeats, dead letters, the runner loop's
failures and batch sizes; and the fleet's gauges of the last hour, read from SQL at scrape
time."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy.orm import Session

from cloud_api.escalation.runner import RunStats
from cloud_api.queries.escalations import escalation_figures
from shared.messages import utcnow


class EscalationMetrics:
    """What a runner answered; ``observe`` is its observer."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.answers = Counter(
            "aiot_escalations",
            "Escalations answered or refused, by agent, pipeline and outcome (agree, disagree, "
            "refused:<why>)",
            ["agent", "pipeline", "outcome"],
            registry=registry,
        )
        self.repeats = Counter(
            "aiot_escalation_repeats",
            "Escalations received again and answered from the stored result",
            registry=registry,
        )
        self.dead_letters = Counter(
            "aiot_escalation_dead_letters", "Escalation payloads kept as dead letters",
            registry=registry,
        )  # fmt: skip
        self.loop_failures = Counter(
            "aiot_escalation_runner_failures",
            "Times the runner's loop failed on a batch and retried it after a pause",
            registry=registry,
        )
        self.batch_inputs = Histogram(
            "aiot_escalation_batch_inputs",
            "Inputs per cloud model session run (dynamic batching)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=registry,
        )

    def observe(self, stats: RunStats) -> None:
        """Called by the runner after each batch is answered."""
        for (agent, pipeline, outcome), count in stats.outcomes.items():
            self.answers.labels(agent, pipeline, outcome).inc(count)
        self.repeats.inc(stats.repeats)
        self.dead_letters.inc(stats.dead_letters)
        self.loop_failures.inc(stats.loop_failures)
        for size in stats.batch_sizes:
            self.batch_inputs.observe(size)


WINDOW_S = 3600.0
"""The fleet gauges' window: the last hour, as the dashboard's panel shows it."""


def escalation_gauges(session: Session) -> Iterator[Metric]:
    """Gauges from the escalations table at scrape time (any replica, wherever the runners
    run): each agent's pipeline's escalations, refusals and edge/cloud agreement last hour."""
    figures = escalation_figures(session, since=utcnow() - timedelta(seconds=WINDOW_S))
    labels = ["agent_id", "pipeline"]
    count = GaugeMetricFamily(
        "aiot_escalations_last_hour",
        "Escalations answered or refused in the last hour",
        labels=labels,
    )
    refused = GaugeMetricFamily(
        "aiot_escalations_refused_last_hour", "Escalations refused in the last hour", labels=labels
    )
    agreement = GaugeMetricFamily(
        "aiot_escalation_agreement_ratio",
        "Share of last hour's answered escalations where edge and cloud labels agree",
        labels=labels,
    )
    for row in figures:
        key = [row.agent_id, row.pipeline]
        count.add_metric(key, row.escalations)
        refused.add_metric(key, row.refused)
        if row.answered:
            agreement.add_metric(key, row.agreed / row.answered)
    yield from (count, refused, agreement)
