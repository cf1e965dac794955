"""Real services for integration tests: Mosquitto (the demo's own launcher) and PostgreSQL.

Ports are chosen free by binding port 0, data lives in temp dirs, and each process is ended
by its own pid.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from cli.broker import MosquittoProcess as Mosquitto
from cli.broker import free_port, wait_for_port

__all__ = ["Mosquitto", "PostgresCluster", "free_port", "wait_for_port"]


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
