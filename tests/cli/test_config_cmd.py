"""`aiot config set` / `aiot config show` against the real app over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app as aiot
from cloud_api.auth import create_api_key
from cloud_api.config import Settings
from cloud_api.credentials import enroll_agent
from tests.dashboard.conftest import LiveServer, running


@pytest.fixture
def api(tmp_path: Path) -> Iterator[LiveServer]:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'cloud.db'}", ingest_enabled=False,
                        rollout_enabled=False, data_dir=tmp_path)  # fmt: skip
    with running(settings) as server:
        with server.session() as session:
            enroll_agent(session, agent_id="press-3", labels={"site": "plant-1"})
            enroll_agent(session, agent_id="press-4", labels={"site": "plant-2"})
        yield server


def key(api: LiveServer, scope: str) -> str:
    with api.session() as session:
        _, token = create_api_key(session, name=f"cli-{scope}", scope=scope)  # type: ignore[arg-type]
    return token


def test_set_then_show_one_agent_and_a_label_selector(api: LiveServer) -> None:
    env = {"AIOT_API_URL": api.url, "AIOT_API_KEY": key(api, "operate")}
    runner = CliRunner(env=env)
    one = runner.invoke(
        aiot,
        [
            "config",
            "set",
            "--agent",
            "press-3",
            "--set",
            "pipelines.spindle.filters.threshold.threshold=0.6",
        ],
    )
    assert one.exit_code == 0, one.output
    assert "press-3" in one.output
    assert "pending" in one.output
    fleet = runner.invoke(
        aiot, ["config", "set", "--label", "site=plant-2", "--set", "log_level=DEBUG"]
    )
    assert fleet.exit_code == 0, fleet.output
    assert "press-4" in fleet.output
    assert "press-3" not in fleet.output
    shown = runner.invoke(aiot, ["config", "show"])
    assert shown.exit_code == 0, shown.output
    assert '"threshold": 0.6' in shown.output
    assert '"log_level": "DEBUG"' in shown.output


def test_refusals_and_an_unreachable_api_are_one_line(api: LiveServer) -> None:
    reader = CliRunner(env={"AIOT_API_URL": api.url, "AIOT_API_KEY": key(api, "read")})
    refused = reader.invoke(
        aiot, ["config", "set", "--agent", "press-3", "--set", "log_level=INFO"]
    )
    assert refused.exit_code == 2
    assert "refused (403)" in refused.output
    unknown = CliRunner(env={"AIOT_API_URL": api.url, "AIOT_API_KEY": key(api, "operate")})
    missing = unknown.invoke(
        aiot, ["config", "set", "--agent", "nobody", "--set", "log_level=INFO"]
    )
    assert missing.exit_code == 2
    assert "unknown" in missing.output
    bad = unknown.invoke(aiot, ["config", "set", "--agent", "press-3", "--set", "log_level"])
    assert bad.exit_code == 2
    assert "KEY.PATH=VALUE" in bad.output
    gone = CliRunner(env={"AIOT_API_URL": "http://127.0.0.1:1"}).invoke(
        aiot, ["config", "show", "press-3"]
    )
    assert gone.exit_code == 1
    assert "cannot reach the cloud API" in gone.output
