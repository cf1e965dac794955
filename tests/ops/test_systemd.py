"""The systemd side: the units verify, and the agent speaks the notify protocol.

The sender is tested against a datagram socket the test binds, as systemd binds
``$NOTIFY_SOCKET``; then ``aiot edge run`` is started the way ``Type=notify`` with
``WatchdogSec=`` starts it, and must say READY=1, ping WATCHDOG=1 and say STOPPING=1.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.systemd_notify import Notifier, Watchdog, watchdog_interval
from tests.edge.conftest import model_section

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "deploy" / "systemd"
AIOT = Path(sys.executable).parent / "aiot"


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    """A datagram socket where systemd would listen."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify"))
        sock.settimeout(60)
        yield sock


def received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_the_notifier_sends_ready_watchdog_and_stopping(
    notify_socket: socket.socket, tmp_path: Path
) -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "notify")})
    assert notifier.enabled
    assert notifier.ready("agent a running")
    assert received(notify_socket) == ["READY=1", "STATUS=agent a running"]
    assert notifier.watchdog()
    assert received(notify_socket) == ["WATCHDOG=1"]
    assert notifier.stopping()
    assert received(notify_socket) == ["STOPPING=1"]


def test_an_abstract_socket_name_is_reached_too() -> None:
    name = f"aiot-test-{os.getpid()}-{threading.get_ident()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(60)
        assert Notifier(f"@{name}").ready()
        assert received(sock) == ["READY=1"]


def test_outside_systemd_nothing_is_sent_and_nothing_fails(tmp_path: Path) -> None:
    assert not Notifier.from_environ({}).ready()
    # A socket that vanished (systemd restarted) is a warning, never an error in the agent.
    assert not Notifier(str(tmp_path / "gone")).watchdog()


def test_watchdog_interval_is_half_of_watchdog_sec_for_this_process_only() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())})
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({}) is None


class RecordingNotifier(Notifier):
    """Records, for each ping, which check it followed (pure logic: no socket)."""

    def __init__(self) -> None:
        super().__init__(None)
        self.pinged_after: list[int] = []
        self.checks = 0

    def watchdog(self) -> bool:
        self.pinged_after.append(self.checks)
        return True


def test_the_watchdog_pings_after_each_passing_check_and_never_after_a_failing_one() -> None:
    """Healthy, wedged for three rounds, healthy again: a ping follows each passing check
    and no failing one, so systemd's timer runs out while the agent is wedged."""
    results: list[str | None] = [None, "outbox wedged", "outbox wedged", "outbox wedged", None]
    notifier = RecordingNotifier()
    done = threading.Event()

    def check() -> str | None:
        notifier.checks += 1
        if notifier.checks >= len(results):
            done.set()
        return results[min(notifier.checks, len(results)) - 1]

    watchdog = Watchdog(notifier, check, interval_s=0.001)
    watchdog.start()
    assert done.wait(60)
    watchdog.stop()
    passing = [
        n for n in range(1, notifier.checks + 1) if results[min(n, len(results)) - 1] is None
    ]
    assert notifier.pinged_after == passing
    assert notifier.pinged_after[:2] == [1, 5]  # none after checks 2, 3 and 4


def test_a_wedged_socket_send_does_not_stop_the_watchdog_thread(tmp_path: Path) -> None:
    """systemd restarting (its socket gone) makes a ping fail; the thread keeps checking."""
    checks = threading.Semaphore(0)

    def check() -> str | None:
        checks.release()
        return None

    watchdog = Watchdog(Notifier(str(tmp_path / "gone")), check, interval_s=0.001)
    watchdog.start()
    try:
        for _ in range(3):
            assert checks.acquire(timeout=60)
    finally:
        watchdog.stop()


def test_aiot_edge_run_under_type_notify_says_ready_pings_and_says_stopping(
    notify_socket: socket.socket, tmp_path: Path
) -> None:
    config = tmp_path / "edge.yaml"
    model = model_section()
    config.write_text(
        "agent_id: systemd-test\n"
        "mqtt: {url: 'mqtt://127.0.0.1:1'}\n"
        f"outbox: {{path: '{tmp_path / 'outbox.db'}'}}\n"
        "metrics: {port: 0}\n"
        "pipelines:\n"
        "  - name: spindle\n"
        "    source: {type: simulated_vibration, seed: 1, speed: 1.0}\n"
        f"    model: {{name: {model['name']}, path: '{model['path']}', "
        f"version: '{model['version']}', labels: {model['labels']}, normal_label: healthy}}\n"
    )
    env = {
        **os.environ,
        "NOTIFY_SOCKET": str(tmp_path / "notify"),
        "WATCHDOG_USEC": "200000",
    }
    process = subprocess.Popen(
        [str(AIOT), "edge", "run", "--config", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        messages = [received(notify_socket)]
        while ["WATCHDOG=1"] not in messages:
            messages.append(received(notify_socket))
        process.send_signal(signal.SIGTERM)
        while ["STOPPING=1"] not in messages:
            messages.append(received(notify_socket))
        output = process.communicate(timeout=60)[0].decode()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert messages[0] == ["READY=1", "STATUS=agent systemd-test running"]
    assert process.returncode == 0, output
    assert output.rstrip().endswith("stopped"), output


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not found")
def test_the_units_verify(tmp_path: Path) -> None:
    """``systemd-analyze verify`` on copies whose ExecStart is this venv's ``aiot`` (it checks
    that the program exists); any warning (an unknown key, a key in the wrong section) fails."""
    names = []
    for unit in sorted(UNITS.glob("*.service")):
        text = unit.read_text().replace("/opt/aiot/venv/bin/aiot", str(AIOT))
        name = unit.name.replace("@.", "@9465.")  # a template verifies as an instance
        (tmp_path / name).write_text(text)
        names.append(name)
    assert {"aiot-edge.service", "aiot-cloud.service", "aiot-ingest@9465.service"} <= set(names)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *names],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_the_edge_unit_is_hardened_and_watched() -> None:
    text = (UNITS / "aiot-edge.service").read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=30",
        "User=aiot",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/aiot-edge",
        "NoNewPrivileges=true",
        "PrivateTmp=true",
        "ProtectHome=true",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "Restart=on-failure",
    ):
        assert f"\n{line}\n" in text, line
