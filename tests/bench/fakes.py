"""Tiny benchmarks for the harness's tests: each ends one way a real one can."""

from __future__ import annotations

import os
import signal
import tempfile
import time

from bench.result import Goal, Result


def passes() -> list[Result]:
    left_behind = tempfile.mkdtemp(prefix="fake-")  # as benchmarks' brokers and databases do
    return [
        Result("fast enough", 95.0, "events/s", 100.0, "bare", Goal.ratio(">=", 0.9),
               details={"tmp": left_behind}),
        Result("too slow", 40.0, "events/s", 100.0, "bare", Goal.ratio(">=", 0.5)),
        Result("p99", 12.0, "ms", goal=Goal.value("<", 50)),
        Result("no goal", 3.0, "s"),
    ]  # fmt: skip


def raises() -> list[Result]:
    raise RuntimeError("agents do not report a pipeline 'spindle-vibration': bench-11")


def crashes() -> list[Result]:
    os.kill(os.getpid(), signal.SIGKILL)
    return []


def hangs() -> list[Result]:
    time.sleep(3600)
    return []
