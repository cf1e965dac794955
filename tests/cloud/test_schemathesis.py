"""schemathesis against the running app's OpenAPI: no 5xx, and no answer outside the contract.

The real app is served by uvicorn (``cli.server.serve_in_thread``) on SQLite with events,
statuses, summaries, dead letters and a model version ingested, and schemathesis' CLI runs
its examples, coverage (every boundary and every way to break each parameter) and fuzzing
phases with an admin key, with a read key and with no key. Each run is bounded in examples
and time, so the whole test takes about three minutes on two busy cores. The checks, and
the exceptions for findings in code this test does not own, are in schemathesis.toml.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cli.server import serve_in_thread
from cloud_api.auth import Scope, create_api_key
from cloud_api.config import Settings
from cloud_api.main import create_app
from shared.messages import encode
from shared.topics import Channel
from tests.cloud.helpers import (
    Publisher,
    make_batch,
    make_status,
    topic,
    unique_agent_id,
    wait_until,
)
from tests.cloud.test_registry import MODEL_FILE
from tests.cloud.test_summaries import make_summary

# A few minutes of fuzzing: make test runs it in its second phase, beside the soak runs.
pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAX_EXAMPLES = 25
"""Per operation and phase, before fuzzing repeats until the run's time is spent."""
CONFIG = Path(__file__).with_name("schemathesis.toml")
"""The checks, and per-operation exceptions each with the finding that makes it one."""


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: the contract is the same on PostgreSQL, and tests/cloud/test_params.py
    runs the values that differ between the two on both."""
    return f"sqlite:///{tmp_path / 'cloud.db'}"


@pytest.fixture
def served(settings: Settings, publisher: Publisher) -> Iterator[tuple[str, dict[str, str]]]:
    """The app on a real port with some of everything ingested; its URL and API tokens."""
    app = create_app(settings)
    with serve_in_thread(app) as url:
        app.state.ingest.wait_connected()
        with app.state.sessionmaker() as session:
            tokens = {
                scope: create_api_key(session, name=f"schemathesis-{scope}", scope=scope)[1]
                for scope in ("read", "admin")
            }
        _ingest_some_of_everything(url, tokens["admin"], publisher)
        yield url, tokens


def _ingest_some_of_everything(url: str, token: str, publisher: Publisher) -> None:
    import httpx

    agent = unique_agent_id("fuzz")
    publisher.publish(topic(agent, Channel.STATUS), encode(make_status(agent)), retain=True)
    publisher.publish(topic(agent, Channel.EVENTS), encode(make_batch(agent, 50)))
    for minute in range(3):
        publisher.publish(topic(agent, Channel.SUMMARY), encode(make_summary(agent, minute)))
    publisher.publish(topic(agent, Channel.EVENTS), b"not json")
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
        uploaded = client.post(
            "/api/v1/models/vibration-anomaly/versions",
            data={"version": "1.0.0"},
            files={"file": ("model.onnx", MODEL_FILE.read_bytes())},
        )
        assert uploaded.status_code == 201, uploaded.text

        def everything_stored() -> bool:
            events = client.get("/api/v1/events", params={"agent_id": agent}).json()["items"]
            letters = client.get("/api/v1/dead-letters").json()["items"]
            bandwidth = client.get("/api/v1/stats/bandwidth").json()["total"]["summaries"]
            return len(events) == 50 and len(letters) == 1 and bandwidth == 3

        wait_until(everything_stored, what="the events, summaries and dead letter")


REVOKE_KEY = "DELETE /api/v1/keys/{key_id}"


@dataclass(frozen=True)
class Run:
    """One schemathesis run: whose key it sends, which operations, for how long at most."""

    scope: Scope | None
    """None: no credentials at all."""
    selection: tuple[str, ...] = ()
    max_time_s: int = 45
    """Fuzzing repeats until this is spent; coverage takes about 35 s of 24 operations."""


RUNS = {
    # schemathesis learns key ids from GET /api/v1/keys and revokes them, its own too: every
    # operation but that one first, then that one alone.
    "admin": Run("admin", (f"--exclude-name={REVOKE_KEY}",), max_time_s=60),
    "admin-revoking-keys": Run("admin", (f"--include-name={REVOKE_KEY}",), max_time_s=10),
    "read": Run("read", max_time_s=60),
    "nobody": Run(None, max_time_s=40),
}


def run_schemathesis(
    url: str, token: str | None, run: Run, report: Path
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """One bounded schemathesis run; its process and its JSON report."""
    executable = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert executable is not None, "schemathesis is in the dev extra: pip install -e '.[dev]'"
    command = [
        executable,
        f"--config-file={CONFIG}",
        "--no-color",
        "run",
        f"{url}/openapi.json",
        "--phases=examples,coverage,fuzzing",
        f"--max-examples={MAX_EXAMPLES}",
        f"--max-time={run.max_time_s}",
        "--seed=20261122",
        "--workers=1",
        "--request-timeout=30",
        "--report=json",
        f"--report-json-path={report}",
        *run.selection,
    ]
    if token is not None:
        command.append(f"--header=Authorization: Bearer {token}")
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=run.max_time_s * 5,
        check=False,
        cwd=report.parent,  # whatever else it writes stays in the test's temp dir
    )
    return done, json.loads(report.read_text()) if report.exists() else {}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", list(RUNS))
def test_no_server_error_and_no_answer_outside_the_contract(
    served: tuple[str, dict[str, str]], name: str, tmp_path: Path
) -> None:
    url, tokens = served
    run = RUNS[name]
    token = tokens[run.scope] if run.scope is not None else None

    done, report = run_schemathesis(url, token, run, tmp_path / "report.json")

    output = done.stdout[-8000:]
    assert report, f"schemathesis wrote no report (exit code {done.returncode}):\n{output}"
    cases, operations = report["test_cases"], report["operations"]
    print(  # the totals, in the test's output (pytest -s, or -rA)
        f"schemathesis {name}: {operations['tested']}/{operations['selected']} operations, "
        f"{cases['generated']} cases, {cases['unique_failures']} failures, "
        f"{len(report['errors'])} errors in {report['running_time']:.0f} s"
    )
    assert report["failures"] == [], output
    assert report["errors"] == [], output
    assert operations["tested"] == operations["selected"] > 0, output
    assert done.returncode == 0, output
    if run.scope == "admin":
        # An admin reaches every operation: a 401/403-only one means the key stopped working.
        assert not report["warnings"].get("missing_auth"), output
