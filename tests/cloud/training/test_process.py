"""A job's training process ends when its worker is killed outright (nobody renews the
job's lease any more, so another worker will train it: it must not be trained twice)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.cloud.helpers import wait_until

CHILD = (
    "import os, sys\n"
    "from cloud_api.training.process import end_with_parent\n"
    "open(sys.argv[1], 'w').write(str(os.getpid()))\n"
    "end_with_parent(os.getppid())\n"
)
WORKER = (
    "import subprocess, sys, time\n"
    "subprocess.Popen([sys.executable, '-c', sys.argv[1], sys.argv[2]])\n"
    "time.sleep(3600)\n"
)


def gone(pid: int) -> bool:
    """Whether the process has ended (it may linger as a zombie until it is reaped)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return True
    return fields[0] in ("Z", "X")


def test_a_training_process_ends_when_its_worker_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"

    def written() -> str | None:
        return pid_file.read_text() if pid_file.exists() else None

    worker = subprocess.Popen([sys.executable, "-c", WORKER, CHILD, str(pid_file)])
    try:
        child = int(wait_until(written, timeout=60, what="the training process started"))
        assert not gone(child)
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    try:
        wait_until(lambda: gone(child), timeout=60, what="the training process ended")
    finally:
        if not gone(child):
            os.kill(child, signal.SIGKILL)
