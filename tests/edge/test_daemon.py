"""``python -m edge_agent`` as a real process: SIGTERM says "stopped", kill -9 leaves the Will."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edge_agent.config import AgentConfig
from tests.edge.conftest import REPO, AgentConfigFactory
from tests.edge.test_agent_mqtt import Subscriber, wait_until
from tests.services import Mosquitto

pytestmark = pytest.mark.integration


def start_daemon(config: AgentConfig, tmp_path: Path) -> subprocess.Popen[bytes]:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True)))
    with (tmp_path / "agent.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "--config", str(path)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


@pytest.mark.parametrize(
    ("how", "reason"), [(signal.SIGTERM, "stopped"), (signal.SIGKILL, "connection lost")]
)
def test_status_says_why_the_agent_went_offline(
    broker: Mosquitto,
    agent_config: AgentConfigFactory,
    tmp_path: Path,
    how: signal.Signals,
    reason: str,
) -> None:
    config = agent_config(broker.url, speed=1.0, duration_s=600)
    subscriber = Subscriber(broker, config.agent_id)
    process = start_daemon(config, tmp_path)
    try:
        wait_until(lambda: any(s.state == "online" for s in subscriber.statuses(config.agent_id)),
                   "the agent to come online")  # fmt: skip
        process.send_signal(how)
        assert process.wait(timeout=30) == (0 if how == signal.SIGTERM else -signal.SIGKILL)
        wait_until(lambda: subscriber.statuses(config.agent_id)[-1].state == "offline", "offline")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        subscriber.close()
    assert subscriber.statuses(config.agent_id)[-1].reason == reason
