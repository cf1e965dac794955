"""Run one benchmark in its own process, within its budget, and say what came of it.

The child is ``python -m bench.child TARGET --json-out FILE`` in a new session (its own
process group), so a timeout can end it and everything it started: SIGTERM first (the
child raises SystemExit and its ``finally`` blocks stop brokers and databases), then, after
``STOP_GRACE_S``, SIGKILL to the whole group. Its stderr is echoed as it comes and its last
lines kept: they are the reason of a failed run. Its TMPDIR is a directory of its own,
removed after a good run and kept (``files_kept``) after a bad one. ``outcome`` is the pure
rule that turns an exit into a status.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Literal, TextIO

from pydantic import TypeAdapter, ValidationError

from bench.registry import Benchmark
from bench.result import Result

Status = Literal["ok", "failed", "timeout"]
ROOT = Path(__file__).resolve().parents[1]
"""The checkout, put on the child's PYTHONPATH: ``bench`` (and a test's fakes) import there."""
STOP_GRACE_S = 10.0
TAIL_LINES = 12


@dataclass
class Run:
    """One benchmark's process: its status, why it failed, how long it took, its results."""

    name: str
    title: str
    status: Status
    duration_s: float
    budget_s: float
    started_at: str
    load_avg_1m: float
    reason: str = ""
    results: list[Result] = field(default_factory=list)
    interrupted: bool = False
    files_kept: str = ""
    """The child's temporary files, kept when it did not end well (removed otherwise)."""


def outcome(
    *, exit_code: int | None, timed_out: bool, budget_s: float, stderr_tail: list[str],
    output: str | None,
) -> tuple[Status, str, list[Result]]:  # fmt: skip
    """Status, reason and results of a child that exited with ``exit_code`` (or ran out of
    ``budget_s``), printed ``stderr_tail`` last and wrote ``output`` (None: no file)."""
    tail = "\n".join(stderr_tail)
    if timed_out:
        return "timeout", _join(f"no result within its {budget_s:g} s budget", tail), []
    if exit_code != 0:
        return "failed", _join(_describe_exit(exit_code), tail), []
    if output is None:
        return "failed", _join("exited 0 without writing its results", tail), []
    try:
        data = _RESULTS.validate_json(output)
    except ValidationError as error:
        return "failed", f"unreadable results: {error}", []
    return "ok", "", data.results


def run_benchmark(benchmark: Benchmark, *, echo: TextIO | None = None) -> Run:
    """Run ``benchmark`` in a child process and wait for it, at most its budget.

    Ctrl-C (KeyboardInterrupt) stops the child too and comes back as a failed run marked
    ``interrupted``, so the caller can still write it. The child's stderr is echoed to
    ``echo`` (sys.stderr by default).
    """
    started_at = datetime.now(UTC).isoformat()
    load = os.getloadavg()[0]
    scratch = _scratch_dir(benchmark.name)
    out = scratch / "results.json"
    start = time.monotonic()
    with subprocess.Popen(
        [sys.executable, "-m", "bench.child", benchmark.target, "--json-out", str(out)],
        stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        env=_child_env(scratch),
    ) as process:  # fmt: skip
        assert process.stderr is not None
        tail = _Tail(process.stderr, echo or sys.stderr)
        tail.start()
        timed_out = interrupted = False
        try:
            process.wait(timeout=benchmark.budget_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        except KeyboardInterrupt:
            interrupted = True
        finally:
            _stop(process)
        duration = time.monotonic() - start
        tail.join(timeout=5.0)
    status, reason, results = outcome(
        exit_code=process.returncode,
        timed_out=timed_out,
        budget_s=benchmark.budget_s,
        stderr_tail=tail.lines(),
        output=out.read_text() if out.exists() else None,
    )
    if interrupted:
        status, reason = "failed", _join(reason, "interrupted: the harness was stopped")
    kept = ""
    if status == "ok":
        shutil.rmtree(scratch, ignore_errors=True)
    else:
        kept = str(scratch)
    return Run(
        name=benchmark.name, title=benchmark.title, status=status, duration_s=duration,
        budget_s=benchmark.budget_s, started_at=started_at, load_avg_1m=load, reason=reason,
        results=results, interrupted=interrupted, files_kept=kept,
    )  # fmt: skip


class _Tail(threading.Thread):
    """Echoes a child's stderr line by line and keeps the last ``TAIL_LINES``; ends at EOF."""

    def __init__(self, stream: IO[bytes], echo: TextIO) -> None:
        super().__init__(name="bench-stderr", daemon=True)
        self._stream = stream
        self._echo = echo
        self._lines: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._lock = threading.Lock()

    def run(self) -> None:
        for raw in self._stream:
            line = raw.decode(errors="replace")
            self._echo.write(line)
            self._echo.flush()
            if line.strip():
                with self._lock:
                    self._lines.append(line.rstrip())

    def lines(self) -> list[str]:
        with self._lock:
            return list(self._lines)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the child if it still runs, give its cleanup STOP_GRACE_S, then SIGKILL its
    whole group: what it started and did not stop (a broker after a segfault) goes too."""
    try:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _scratch_dir(name: str) -> Path:
    """The child's TMPDIR: whatever its benchmark puts in temporary directories (a broker's
    queue, a database, hundreds of MB for some) goes with it. Others may read it: the
    PostgreSQL server runs as its own user below it."""
    scratch = Path(tempfile.mkdtemp(prefix=f"aiot-bench-{name}-"))
    scratch.chmod(0o755)
    return scratch


def _child_env(scratch: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", "TMPDIR": str(scratch)}


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def _join(*parts: str) -> str:
    return "\n".join(p for p in parts if p)


@dataclass
class _ResultsFile:
    """What ``bench.child`` writes."""

    results: list[Result]


_RESULTS = TypeAdapter(_ResultsFile)
