"""`aiot` commands as child processes, their descendants read from /proc, ended by pid."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

AIOT = Path(sys.executable).parent / "aiot"


def _parents() -> dict[int, int]:
    """pid -> parent pid of every live process (zombies excluded)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone while we read
            continue
        fields = text.rsplit(")", 1)[1].split()  # after "(comm)", which may hold spaces
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    return parents


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``."""
    parents = _parents()
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def alive(pids: set[int]) -> set[int]:
    """Those of ``pids`` still running (not zombies)."""
    return pids & set(_parents())


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


@dataclass
class Command:
    """One `aiot ...` process writing stdout and stderr to a log file."""

    args: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Command:
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [str(AIOT), *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
                # Its own process group: kill() reaches what it started even once the parent
                # is gone and its children were handed to init (what these tests look for).
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 120, count: int = 1) -> None:
        """Until ``text`` appears ``count`` times in the output; fails if the process ends."""
        process = self.process
        assert process is not None
        wait_until(
            lambda: self.output().count(text) >= count or process.poll() is not None,
            timeout,
            f"{text!r} from aiot {' '.join(self.args[:2])}",
        )
        assert process.poll() is None, self.output()

    def finish(self, timeout: float = 60) -> int:
        """The exit code, after waiting for the exit (killed if it hangs, then failed)."""
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"did not exit in {timeout} s:\n{self.output()}") from None

    def kill(self) -> None:
        """SIGKILL the process and what it started (a failed test leaves nothing behind)."""
        if self.process is None:
            return
        for pid in descendants(self.process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, 9)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
