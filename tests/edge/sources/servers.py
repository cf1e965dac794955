"""Device servers for the source tests, each its own process on a free port of 127.0.0.1.

A test may SIGKILL one (a device that disappears) and start it again on the same port.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.services import free_port

REPO = Path(__file__).resolve().parents[3]


def _with_repo_on_path() -> dict[str, str]:
    """The environment, with the repository importable from any working directory."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class ServerProcess:
    """``python -m module PORT [args]`` run in ``workdir``, ended by its pid."""

    module: str
    workdir: Path
    args: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    start_timeout_s: float = 30.0

    def start(self) -> None:
        if self.process is not None:
            raise RuntimeError(f"{self.module} is already running")
        with (self.workdir / "server.log").open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module, str(self.port), *self.args],
                cwd=self.workdir, env=_with_repo_on_path(), stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + self.start_timeout_s
        while not _listening(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{self.module} did not start:\n{self.log()[-3000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: the device vanishes without a goodbye."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)
            self.process = None

    def log(self) -> str:
        return (self.workdir / "server.log").read_text(errors="replace")
