"""A running agent, read from its metrics port: connected to the broker, outbox, uptime."""

from __future__ import annotations

import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from edge_agent.config import AgentConfig
from edge_agent.doctor.check import Check


def live_checks(config: AgentConfig, *, timeout_s: float) -> list[Check]:
    """What the agent running with this config says, if one is running."""
    metrics = config.metrics
    if metrics.port == 0:
        return [Check.skipped("live agent", "metrics.port is 0: a running agent cannot be read")]
    url = f"http://{metrics.host}:{metrics.port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError):
        return [Check.skipped("live agent", f"none answers on {url}")]
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }
    if "aiot_edge_uptime_seconds" not in values:
        return [
            Check.failed(
                "live agent",
                f"{url} is not an aiot agent's exporter",
                "another program uses metrics.port: give the agent another",
            )
        ]
    uptime = values["aiot_edge_uptime_seconds"]
    depth = int(values.get("aiot_edge_outbox_depth", 0))
    detail = f"up {uptime:.0f} s, {depth} items in the outbox"
    if values.get("aiot_edge_mqtt_connected") != 1:
        return [
            Check.failed(
                "live agent",
                f"{detail}, not connected to the broker",
                "see the broker checks above; the agent keeps retrying",
            )
        ]
    return [Check.passed("live agent", f"{detail}, connected to the broker")]
