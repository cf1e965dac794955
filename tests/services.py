"""Real services for integration tests: Mosquitto (the demo's own launcher) and PostgreSQL,
and brokers that a test may crash: Mosquitto with the shipped persistence config, amqtt.

Ports are chosen free by binding port 0, data lives in temp dirs, and each process is ended
by its own pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cli.broker import MosquittoProcess as Mosquitto
from cli.broker import free_port, wait_for_port

__all__ = [
    "AmqttProcess",
    "CrashableBroker",
    "CrashableMosquitto",
    "Mosquitto",
    "PostgresCluster",
    "free_port",
    "wait_for_port",
]

SHIPPED_MOSQUITTO_CONF = Path(__file__).resolve().parents[1] / "deploy/mosquitto/mosquitto.conf"


def _as_postgres(args: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


@dataclass
class PostgresCluster:
    """A throwaway PostgreSQL cluster from the preinstalled binaries (``initdb``, ``pg_ctl``)."""

    datadir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="aiot-pg-")))
    port: int = field(default_factory=free_port)

    def start(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.datadir, "postgres", "postgres")
        subprocess.run(
            _as_postgres(["initdb", "-D", str(self.datadir / "data"), "-U", "postgres",
                          "--auth=trust", "-E", "UTF8", "--no-locale"]),
            check=True, capture_output=True,
        )  # fmt: skip
        self.resume()

    def resume(self) -> None:
        """Start the server on the cluster's data (again, after ``halt``)."""
        options = (
            f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        subprocess.run(
            _as_postgres(["pg_ctl", "-D", str(self.datadir / "data"), "-o", options,
                          "-l", str(self.datadir / "postgres.log"), "-w", "start"]),
            check=True, capture_output=True,
        )  # fmt: skip

    def halt(self) -> None:
        """Stop the server and keep its data: a database outage ``resume`` ends."""
        subprocess.run(
            _as_postgres(["pg_ctl", "-D", str(self.datadir / "data"), "-m", "fast", "stop"]),
            check=True, capture_output=True,
        )  # fmt: skip

    def stop(self) -> None:
        subprocess.run(
            _as_postgres(["pg_ctl", "-D", str(self.datadir / "data"), "-m", "fast", "stop"]),
            check=False, capture_output=True,
        )  # fmt: skip
        shutil.rmtree(self.datadir, ignore_errors=True)

    def create_database(self) -> str:
        """Create a fresh database and return its SQLAlchemy URL (psycopg 3 driver)."""
        name = "t_" + uuid.uuid4().hex[:12]
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-q",
             "-c", f"CREATE DATABASE {name}"],
            check=True, capture_output=True,
        )  # fmt: skip
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"


class CrashableBroker(Protocol):
    """A broker in its own process that a test may SIGKILL and start again on the same port."""

    port: int

    @property
    def url(self) -> str: ...
    @property
    def protocol(self) -> str: ...
    def start(self) -> None: ...
    def kill(self) -> None: ...
    def stop(self) -> None: ...


@dataclass
class _BrokerProcess:
    """One broker process at a time on a fixed port, ended by its pid."""

    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        if self.process is not None:
            raise RuntimeError("the broker is already running")
        self.starts += 1
        with (self.workdir / "broker.log").open("ab") as log:
            log.write(f"--- start {self.starts} ---\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for_port(self.port, timeout=30)

    def kill(self) -> None:
        """SIGKILL: a crash, nothing is saved on the way out."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM: a clean stop (Mosquitto saves its sessions)."""
        self._end(signal.SIGTERM)

    def _end(self, sig: signal.Signals) -> None:
        if self.process is not None:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)
            self.process = None


@dataclass
class CrashableMosquitto(_BrokerProcess):
    """Mosquitto with persistence exactly as ``deploy/mosquitto/mosquitto.conf`` ships it.

    Only the parts that name the deployment's machine change: the data directory becomes one
    in ``workdir``, and the included auth directory becomes an anonymous listener on our port.
    Autosave stays as shipped: a SIGKILL loses what was not saved, as it would in production.
    """

    protocol: str = "5"

    def command(self) -> list[str]:
        data = self.workdir / "mosquitto-data"
        data.mkdir(exist_ok=True)
        lines: list[str] = []
        for line in SHIPPED_MOSQUITTO_CONF.read_text().splitlines():
            key = line.split(maxsplit=1)[0] if line.strip() else ""
            if key == "persistence_location":
                lines.append(f"persistence_location {data}/")
            elif key != "include_dir":
                lines.append(line)
        # `user root`: as root Mosquitto would drop to `mosquitto`, which cannot write `data`.
        lines += [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "user root"]
        conf = self.workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return ["mosquitto", "-c", str(conf)]


@dataclass
class AmqttProcess(_BrokerProcess):
    """The amqtt broker (MQTT 3.1.1 only) as a child process, so that it can be SIGKILLed."""

    protocol: str = "3.1.1"

    def command(self) -> list[str]:
        conf = self.workdir / "amqtt.yaml"
        conf.write_text(
            "listeners:\n"
            "  default:\n"
            "    type: tcp\n"
            f"    bind: 127.0.0.1:{self.port}\n"
            "plugins:\n"
            "  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
            "    allow_anonymous: true\n"
        )
        return [str(Path(sys.executable).parent / "amqtt"), "-c", str(conf)]
