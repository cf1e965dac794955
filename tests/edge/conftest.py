"""Fixtures for the edge agent: the shipped model, configs with a test's own agent id."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config import AgentConfig

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "vibration-anomaly-1.0.0.onnx"
MANIFEST = REPO / "models" / "manifest.json"
LABELS = [
    "healthy",
    "imbalance",
    "misalignment",
    "bearing_outer_race",
    "bearing_inner_race",
    "impact",
]

AgentConfigFactory = Callable[..., AgentConfig]


def model_section() -> dict[str, Any]:
    return {
        "name": "vibration-anomaly",
        "path": str(MODEL),
        "version": "1.0.0",
        "labels": LABELS,
        "normal_label": "healthy",
    }


@pytest.fixture
def agent_config(tmp_path: Path) -> AgentConfigFactory:
    """Build a config for a fast (speed 0), finite vibration pipeline with a unique agent id."""

    def build(
        broker_url: str = "mqtt://127.0.0.1:1",
        *,
        protocol: str = "5",
        duration_s: float = 30.0,
        schedule: list[dict[str, Any]] | None = None,
        speed: float = 0.0,
        summary_interval_s: float = 0.0,
        **outbox: Any,
    ) -> AgentConfig:
        """Summaries are off unless a test asks: most tests count exactly the events."""
        if schedule is None:
            schedule = [
                {"at_s": 5, "duration_s": 5, "fault": "imbalance"},
                {"at_s": 15, "duration_s": 5, "fault": "bearing_inner_race"},
            ]
        return AgentConfig.model_validate(
            {
                "agent_id": f"test-{uuid.uuid4().hex[:10]}",
                "mqtt": {
                    "url": broker_url,
                    "protocol": protocol,
                    "heartbeat_s": 1,
                    "reconnect_max_s": 2,
                },
                "outbox": {"path": str(tmp_path / "outbox.db"), **outbox},
                "pipelines": [
                    {
                        "name": "spindle",
                        "source": {
                            "type": "simulated_vibration",
                            "seed": 3,
                            "speed": speed,
                            "duration_s": duration_s,
                            "schedule": schedule,
                        },
                        "model": model_section(),
                        "summary_interval_s": summary_interval_s,
                    }
                ],
            }
        )

    return build
