"""Runs a reading source in a thread, as a pipeline would, and keeps what it yields."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from edge_agent.sources.readings import Readings, ReadingSource
from edge_agent.sources.windows import Window, WindowConfig, Windower


class Collector:
    """``source.readings(stop)`` on its own thread; batches kept and windowed as they come."""

    def __init__(self, source: ReadingSource, window: WindowConfig | None = None) -> None:
        self.source = source
        self.stop = threading.Event()
        self.batches: list[Readings] = []
        self.windows: list[Window] = []
        self._windower = Windower(window, source.channels) if window is not None else None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="collector", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            for batch in self.source.readings(self.stop):
                windows = self._windower.push(batch) if self._windower else []
                with self._lock:
                    self.batches.append(batch)
                    self.windows += windows
        except BaseException as exc:  # the test reports it
            self.error = exc

    def __enter__(self) -> Collector:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the source did not stop"
        assert self.error is None, f"the source raised {self.error!r}"

    @property
    def ts(self) -> list[float]:
        with self._lock:
            return [t for b in self.batches for t in b.ts.tolist()]

    @property
    def values(self) -> np.ndarray:
        with self._lock:
            if not self.batches:
                return np.empty((0, len(self.source.channels)))
            return np.concatenate([b.values for b in self.batches])

    def wait_for(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``condition()`` holds; fail the test after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.error is None, f"the source raised {self.error!r}"
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s; got {len(self.ts)} readings")
            time.sleep(0.02)
