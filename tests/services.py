"""Real services for integration tests: a Mosquitto broker and a PostgreSQL cluster as processes.

Ports are chosen free by binding port 0, data lives in temp dirs, and each process is ended
by its own pid.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@dataclass
class Mosquitto:
    """A Mosquitto broker on 127.0.0.1; ``stop()``/``start()`` simulate an outage on one port."""

    workdir: Path
    port: int = field(default_factory=free_port)
    extra_config: str = ""
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "user root\n"
            "max_inflight_messages 0\n"
            "max_queued_messages 100000\n"
            f"{self.extra_config}"
        )
        log = (self.workdir / "mosquitto.log").open("ab")
        self.process = subprocess.Popen(
            ["mosquitto", "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


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
        options = (
            f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        subprocess.run(
            _as_postgres(["pg_ctl", "-D", str(self.datadir / "data"), "-o", options,
                          "-l", str(self.datadir / "postgres.log"), "-w", "start"]),
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
