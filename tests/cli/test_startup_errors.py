"""A busy port, a database that does not connect and a broker that refuses the login each
stop a command with one line naming the problem and the fix: status 2, never a traceback."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_api.broker_config import write_broker_config
from cloud_api.credentials import create_broker_user
from cloud_api.db import create_db_engine, create_sessionmaker, migrate
from tests.ops.processes import AIOT, Command
from tests.services import Mosquitto, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something listens on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AIOT), *args], capture_output=True, text=True, timeout=120, check=False
    )


def the_one_line(result: subprocess.CompletedProcess[str]) -> str:
    """Exit status 2, and stderr is one line (returned), no traceback anywhere."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("command", "option"),
    [
        (["demo", "--duration", "5", "--port"], "--port"),
        (["cloud", "serve", "--db", "sqlite:///{tmp}/c.db", "--port"], "--port"),
        (["cloud", "ingest", "--db", "sqlite:///{tmp}/c.db", "--metrics-port"], "--metrics-port"),
    ],
    ids=["demo", "serve", "ingest"],
)
def test_a_port_in_use(command: list[str], option: str, busy_port: int, tmp_path: Path) -> None:
    args = [part.format(tmp=tmp_path) for part in command]
    line = the_one_line(run(*args, str(busy_port)))
    assert f"port {busy_port} on 127.0.0.1 is not available" in line
    assert f"pass {option} with another port" in line


@pytest.mark.parametrize("command", [["cloud", "serve"], ["cloud", "ingest"]], ids=str)
def test_a_database_that_does_not_connect(command: list[str]) -> None:
    url = f"postgresql://aiot:s3cret-word@127.0.0.1:{free_port()}/aiot"
    line = the_one_line(
        run(*command, "--db", url, "--mqtt", "mqtt://127.0.0.1:1", "--metrics-port", "0")
        if command[1] == "ingest"
        else run(*command, "--db", url, "--port", str(free_port()))
    )
    assert "cannot use the database postgresql://aiot:***@127.0.0.1:" in line
    assert "Connection refused" in line
    assert "check --db (or $AIOT_DATABASE_URL)" in line
    assert "s3cret-word" not in line


def test_a_broker_that_refuses_the_login(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'cloud.db'}"
    engine = create_db_engine(database)
    migrate(engine)
    with create_sessionmaker(engine)() as session:
        _, password, _ = create_broker_user(session, username="ingest", role="ingest")
        write_broker_config(session, tmp_path / "broker")
    engine.dispose()
    broker = Mosquitto(
        tmp_path,
        allow_anonymous=False,
        extra_config=f"password_file {tmp_path / 'broker' / 'passwd'}\n"
        f"acl_file {tmp_path / 'broker' / 'acl'}\n",
    )
    broker.start()
    try:
        address = f"127.0.0.1:{broker.port}"
        common = ["--db", database, "--metrics-port", "0", "--client-id", "ingest-1"]
        refused = run("cloud", "ingest", "--mqtt", f"mqtt://ingest:wrong@{address}", *common)
        # The worker's own log line may come first; the last line names the problem and fix.
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "Traceback" not in refused.stdout + refused.stderr
        last = refused.stderr.strip().splitlines()[-1]
        assert f"the broker {address} refused the login" in last
        assert "check the user name and password in --mqtt" in last
        assert "wrong" not in last
        wrong = tmp_path / "wrong-password"
        wrong.write_text("wrong\n")
        wrong.chmod(0o600)
        serve = run(
            "cloud", "serve", "--db", database, "--port", str(free_port()),
            "--mqtt", f"mqtt://ingest@{address}", "--mqtt-password-file", str(wrong),
        )  # fmt: skip
        line = the_one_line(serve)
        assert f"the broker {address} refused the login" in line
        assert "wrong" not in line
        # The right password gets in: it was the login, not the broker.
        accepted = Command(
            ["cloud", "ingest", "--mqtt", f"mqtt://ingest:{password}@{address}", *common],
            tmp_path / "accepted.log",
        ).start()
        try:
            accepted.wait_for("subscribed")
        finally:
            accepted.kill()
    finally:
        broker.stop()
