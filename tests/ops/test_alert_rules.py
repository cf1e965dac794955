"""The alert rules in deploy/prometheus/ name only metrics the code exports, and they cover
the five situations an operator must hear about. ``promtool`` checks their syntax when it is
installed (Debian's ``prometheus`` package)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cloud_api.db import create_db_engine, create_sessionmaker, migrate
from cloud_api.metrics import FleetCollector, IngestMetrics, Metrics
from edge_agent.health import AgentCollector, UplinkHealth
from tests.cloud.helpers import make_status

RULES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = RULES_DIR / "alerts.yml"
METRIC = re.compile(r"\b(aiot_[a-z0-9_]+)")


def names(registry: CollectorRegistry) -> set[str]:
    """Every sample name an exposition of ``registry`` can carry (``_total``, ``_bucket``...)."""
    found: set[str] = set()
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        found.add(family.name)
        found.update(sample.name for sample in family.samples)
        if family.type == "counter":
            found.add(f"{family.name}_total")
        if family.type == "histogram":
            found.update(f"{family.name}_{end}" for end in ("bucket", "count", "sum"))
    return found


def exported(tmp_path: Path) -> set[str]:
    """What the API, an ingest worker and an agent export."""
    engine = create_db_engine(f"sqlite:///{tmp_path / 'cloud.db'}")
    migrate(engine)
    try:
        api = Metrics()
        api.watch_fleet(FleetCollector(create_sessionmaker(engine), grace=3.0))
        ingest = CollectorRegistry()
        IngestMetrics(ingest)
        edge = CollectorRegistry()
        status = make_status("rules-agent", ack_rtt_p50_s=0.1, ack_rtt_p99_s=0.2)
        uplink = UplinkHealth(True, 1, 1, 0, 0)
        edge.register(AgentCollector(lambda: status, lambda: uplink, lambda: 0))
        return names(api.registry) | names(ingest) | names(edge)
    finally:
        engine.dispose()


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def unknown_metrics(checked: list[dict[str, Any]], known: set[str]) -> set[str]:
    """The aiot metrics ``checked`` rules name that are not in ``known``."""
    return {name for rule in checked for name in METRIC.findall(rule["expr"])} - known


def test_every_rule_names_a_metric_the_code_exports(tmp_path: Path) -> None:
    known = exported(tmp_path)
    for rule in rules():
        assert METRIC.findall(rule["expr"]), f"{rule['alert']} names no aiot metric"
    assert unknown_metrics(rules(), known) == set()


def test_the_rules_cover_what_an_operator_must_hear_about() -> None:
    alerts = {rule["alert"] for rule in rules()}
    assert {
        "AiotAgentOffline",
        "AiotOutboxGrowing",
        "AiotAckRoundTripHigh",
        "AiotDeadLettersRising",
        "AiotRolloutHalted",
    } <= alerts
    assert all(rule.get("annotations", {}).get("summary") for rule in rules())


def test_the_checker_sees_a_metric_nobody_exports(tmp_path: Path) -> None:
    """The comparison the rules test makes, on a rule that names a metric nobody exports."""
    names = exported(tmp_path)
    bogus = {"alert": "AiotBogus", "expr": "rate(aiot_no_such_thing[5m]) > aiot_agents"}
    assert unknown_metrics([bogus], names) == {"aiot_no_such_thing"}
    assert unknown_metrics(rules(), names) == set()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_accepts_the_rules_and_the_scrape_config() -> None:
    for args in (["check", "rules", str(RULES)], ["check", "config", "prometheus.yml"]):
        result = subprocess.run(
            ["promtool", *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr
