"""What a run was measured on: ratios compare within a run, this says which run it was."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any


def machine_info(checkout: Path) -> dict[str, Any]:
    """Python, CPU, cores this process may use, memory, load at the start and the commit."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.machine(),
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gb": _memory_gb(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "commit": _commit(checkout),
    }


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    names = (line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    return next(names, platform.processor())


def _memory_gb() -> float | None:
    try:
        first = Path("/proc/meminfo").read_text().split("\n", 1)[0]  # MemTotal: N kB
    except OSError:
        return None
    return round(int(first.split()[1]) / 2**20, 1)


def _commit(checkout: Path) -> str | None:
    """HEAD, with ``+dirty`` when the tree has changes; None outside a git checkout."""
    try:
        head = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")
