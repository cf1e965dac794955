"""The cloud's inference times for the placement report, asked by requests at the same time:
each version is measured once, no two measurements overlap (each would slow the other), and
every request gets the time of the version it asked for."""

from __future__ import annotations

import threading
from pathlib import Path

from cloud_api.analytics.cloud_times import CloudTimes
from cloud_api.registry import FileArtifactStore, artifact_key

TIMES = {b"model a": 1.5, b"model b": 7.0}
MEASURE_S = 0.2
"""How long a fake measurement lasts: long enough for the others to arrive while it runs
(never asserted)."""


class FakeTimer:
    """Times a 'model' by its bytes, recording how many measurements ran at once."""

    def __init__(self) -> None:
        self.measured: list[bytes] = []
        self.running = self.most_at_once = 0
        self._lock = threading.Lock()

    def __call__(self, path: Path) -> float | None:
        content = path.read_bytes()
        with self._lock:
            self.measured.append(content)
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        threading.Event().wait(MEASURE_S)
        with self._lock:
            self.running -= 1
        return TIMES.get(content)


def store_with_models(tmp_path: Path) -> FileArtifactStore:
    store = FileArtifactStore(tmp_path / "artifacts")
    for name, content in (("a", b"model a"), ("b", b"model b")):
        source = tmp_path / name
        source.write_bytes(content)
        store.put(artifact_key(f"model-{name}", "1.0.0"), source)
    return store


def test_requests_at_once_get_their_own_versions_time_measured_once_alone(
    tmp_path: Path,
) -> None:
    timer = FakeTimer()
    times = CloudTimes(store_with_models(tmp_path), measure=timer)
    asks = [("a", "sha-a"), ("b", "sha-b")] * 4
    answers: list[tuple[str, float | None]] = []
    start = threading.Barrier(len(asks))

    def ask(name: str, sha256: str) -> None:
        start.wait()
        answer = times.of(name=f"model-{name}", version="1.0.0", sha256=sha256)
        answers.append((name, answer))

    threads = [threading.Thread(target=ask, args=pair) for pair in asks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(timer.measured) == [b"model a", b"model b"]
    assert timer.most_at_once == 1
    assert sorted(answers) == sorted([("a", 1.5), ("b", 7.0)] * 4)


def test_a_model_the_store_cannot_give_yet_is_timed_once_it_can(tmp_path: Path) -> None:
    timer = FakeTimer()
    store = FileArtifactStore(tmp_path / "artifacts")
    times = CloudTimes(store, measure=timer)

    assert times.of(name="model-a", version="1.0.0", sha256="sha-a") is None
    store_with_models(tmp_path)  # the same root: the artifact is there now
    assert times.of(name="model-a", version="1.0.0", sha256="sha-a") == 1.5
    assert times.of(name="model-a", version="1.0.0", sha256="sha-a") == 1.5
    assert timer.measured == [b"model a"]
