"""The escalation runner's Prometheus family: answers per agent and pipeline by outcome
(agreement with the edge, or the kind of refusal), repeats, dead letters and batch sizes."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from cloud_api.escalation.runner import RunStats


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
        for size in stats.batch_sizes:
            self.batch_inputs.observe(size)
