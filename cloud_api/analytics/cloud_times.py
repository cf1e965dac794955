"""The cloud's inference time of each registered model version, for the placement report.

A version is timed once, by the registry's inspection child on one thread (an artifact
never changes under its sha256), and the time kept. Timings are taken one at a time: two
children sharing the CPU each measure their model slower than it runs, so concurrent
placement requests would keep (and report) times inflated by each other, and the same
version would be timed once per request. A request that wants a version being timed waits
for that one measurement; another version waits its turn.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from cloud_api.inspection import inspect_onnx
from cloud_api.registry import ArtifactStore, artifact_key
from shared.errors import ModelError

Measure = Callable[[Path], float | None]
"""Time the ONNX file at a path, in ms per run; None if it cannot run."""


def time_onnx(path: Path) -> float | None:
    """The inspection child's median time of one run on the golden input; None for a model
    that does not load or has no golden input (it will not do better next time)."""
    try:
        return inspect_onnx(path).run_ms
    except ModelError:
        return None


class CloudTimes:
    """Each registered version's cloud inference time, measured once and one at a time."""

    def __init__(self, store: ArtifactStore, measure: Measure = time_onnx) -> None:
        self._store = store
        self._measure = measure
        self._times: dict[str, float | None] = {}
        self._lock = threading.Lock()
        """Guards ``_times``."""
        self._timing = threading.Lock()
        """Held while a measurement runs: never two at once."""

    def of(self, *, name: str, version: str, sha256: str) -> float | None:
        """The time of ``name`` ``version`` (whose artifact is ``sha256``): kept, or measured
        now (waiting for a measurement under way); None if it cannot be timed."""
        known, timed = self._known(sha256)
        if known:
            return timed
        with self._timing:
            known, timed = self._known(sha256)  # measured while this request waited
            if known:
                return timed
            with tempfile.TemporaryDirectory(prefix="aiot-placement-") as scratch:
                copy = Path(scratch) / "model.onnx"
                if not self._fetch(name, version, copy):
                    return None  # not kept: tried again next time
                timed = self._measure(copy)
            with self._lock:
                self._times[sha256] = timed
        return timed

    def _fetch(self, name: str, version: str, copy: Path) -> bool:
        """Copy the artifact to ``copy``; False if the store cannot give it now."""
        try:
            with self._store.open(artifact_key(name, version)) as source, copy.open("wb") as out:
                shutil.copyfileobj(source, out)
        except OSError:
            return False
        return True

    def _known(self, sha256: str) -> tuple[bool, float | None]:
        with self._lock:
            return sha256 in self._times, self._times.get(sha256)
