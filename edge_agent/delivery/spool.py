"""The sample spool: kept inputs on the gateway's disk until the uploader has delivered them.

Pipelines never wait for it: a kept input goes as a ``PendingSample`` (the copied input and a
function that encodes it) into a bounded queue, and the spool's writer thread encodes it
(``.npy``, or a JPEG after the privacy policy's blurring), then writes the blob and its
metadata. The spool is bounded in bytes and in files: the oldest samples are dropped first
(sample ids are time-ordered) and counted. A sample is one file, ``<id>.sample``: its
metadata as one line of JSON, then the blob. One file creation per sample, because creating
files is what a gateway's disk is slowest at; a file cut short by a crash is recognised (the
metadata declares the blob's size) and removed at the next start, which indexes the rest.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from edge_agent.config_types import FilePath, StrictConfig
from shared.errors import StorageError
from shared.messages import encode
from shared.samples import SampleMeta

log = logging.getLogger(__name__)

SUFFIX = ".sample"


class SpoolConfig(StrictConfig):
    """Where kept samples wait for upload, how much they may take, and how uploads retry."""

    dir: FilePath | None = Field(default=None, description="default: samples/ beside the outbox")
    max_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    max_files: int = Field(default=10_000, ge=1)
    queue: int = Field(
        default=64, ge=1, le=100_000, description="kept inputs waiting for the writer thread"
    )
    upload_timeout_s: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    upload_backoff_s: float = Field(
        default=1.0, gt=0, allow_inf_nan=False, description="first wait; doubles per failure"
    )
    upload_backoff_max_s: float = Field(default=60.0, gt=0, allow_inf_nan=False)


@dataclass(slots=True)  # not frozen: built on the hot path, where a frozen one costs more
class PendingSample:
    """A kept input on its way to the writer: ``build`` encodes it (off the hot path) into
    samples, each its metadata and blob (none when the privacy policy lets nothing leave)."""

    pipeline: str
    build: Callable[[], list[tuple[SampleMeta, bytes]]]


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """A whole sample in the spool."""

    id: str
    pipeline: str
    size: int
    """Bytes on disk: the metadata line and the blob."""
    path: Path

    def read(self) -> tuple[bytes, bytes]:
        """The metadata (JSON) and the blob; OSError if the file is gone."""
        data = self.path.read_bytes()
        line_end = data.index(b"\n")
        return data[:line_end], data[line_end + 1 :]


@dataclass(slots=True)
class SpoolCounters:
    """What the spool did since the agent started."""

    written: int = 0
    dropped: int = 0
    """Samples removed unsent because the spool was over its bounds (oldest first)."""
    queue_full: int = 0
    """Kept inputs not written because the writer's queue was full."""
    errors: int = 0


class Spool:
    """The bounded on-disk spool, its writer thread and the index the uploader reads."""

    def __init__(self, root: Path, *, max_bytes: int, max_files: int, queue_size: int) -> None:
        self.root = root
        self._max_bytes = max_bytes
        self._max_files = max_files
        self._queue: queue.Queue[PendingSample | None] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._index: OrderedDict[str, SpoolEntry] = OrderedDict()
        self._bytes = 0
        self._by_pipeline: Counter[str] = Counter()
        self.counters = SpoolCounters()
        self.arrived = threading.Event()
        """Set when a sample is written: the uploader wakes up."""
        self._thread: threading.Thread | None = None
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the sample spool {root}: {exc.strerror}") from None
        self._load()

    def submit(self, pending: PendingSample) -> bool:
        """Hand a kept input to the writer without waiting; False (counted) if its queue is full."""
        try:
            self._queue.put_nowait(pending)
        except queue.Full:
            self.counters.queue_full += 1
            return False
        return True

    def start(self) -> None:
        """Start the writer thread."""
        self._thread = threading.Thread(target=self._write_queued, name="spool-writer")
        self._thread.start()

    def stop(self) -> None:
        """Write what is queued, then end the writer thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def flush(self) -> None:
        """Wait until every submitted input is written (tests, benchmarks)."""
        self._queue.join()

    def write(self, meta: SampleMeta, blob: bytes) -> None:
        """Write one sample, then drop the oldest while over the bounds. StorageError on a
        disk that refuses it."""
        path = self.root / f"{meta.id}{SUFFIX}"
        data = encode(meta) + b"\n" + blob
        try:
            _write(path, data)
        except OSError as exc:
            path.unlink(missing_ok=True)
            raise StorageError(f"cannot write sample {meta.id}: {exc.strerror}") from None
        entry = SpoolEntry(meta.id, meta.pipeline, len(data), path)
        with self._lock:
            self._add(entry)
            self.counters.written += 1
            victims = self._over_bounds()
        for victim in victims:
            _unlink(victim)
        self.arrived.set()

    def oldest(self, count: int) -> list[SpoolEntry]:
        """Up to ``count`` samples, oldest first."""
        with self._lock:
            return [entry for entry, _ in zip(self._index.values(), range(count), strict=False)]

    def remove(self, entry: SpoolEntry) -> None:
        """Forget a sample (delivered, or refused for good) and delete its files."""
        with self._lock:
            if self._index.pop(entry.id, None) is None:
                return
            self._bytes -= entry.size
            self._by_pipeline[entry.pipeline] -= 1
        _unlink(entry)

    def depth(self, pipeline: str | None = None) -> int:
        """Samples waiting (of one pipeline, or all)."""
        with self._lock:
            return len(self._index) if pipeline is None else self._by_pipeline[pipeline]

    @property
    def bytes(self) -> int:
        """Bytes on disk of the samples waiting."""
        return self._bytes

    def _add(self, entry: SpoolEntry) -> None:
        """Index ``entry``; a sample written again under its id (one file) replaces itself."""
        previous = self._index.pop(entry.id, None)
        if previous is not None:
            self._bytes -= previous.size
            self._by_pipeline[previous.pipeline] -= 1
        self._index[entry.id] = entry
        self._index.move_to_end(entry.id)
        self._bytes += entry.size
        self._by_pipeline[entry.pipeline] += 1

    def _over_bounds(self) -> list[SpoolEntry]:
        """Take the oldest entries out of the index until the bounds hold (lock held)."""
        victims: list[SpoolEntry] = []
        while self._index and (self._bytes > self._max_bytes or len(self._index) > self._max_files):
            _, entry = self._index.popitem(last=False)
            self._bytes -= entry.size
            self._by_pipeline[entry.pipeline] -= 1
            self.counters.dropped += 1
            victims.append(entry)
        return victims

    def _write_queued(self) -> None:
        failing = False
        while (pending := self._queue.get()) is not None:
            try:
                for meta, blob in pending.build():
                    self.write(meta, blob)
                if failing:
                    log.info("sample spool: writing works again")
                    failing = False
            except Exception as exc:  # encoding, blurring or the disk: the thread must live
                self.counters.errors += 1
                if not failing:
                    log.error("sample spool: cannot keep a sample of %s: %s", pending.pipeline, exc)
                    failing = True
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def _load(self) -> None:
        """Index what a previous run left, oldest input first; remove what is not whole."""
        found: list[tuple[SampleMeta, SpoolEntry]] = []
        for path in self.root.iterdir():
            if path.suffix != SUFFIX or not path.is_file():
                continue  # not ours: never read, never removed
            try:
                meta_line, blob = SpoolEntry("", "", 0, path).read()
                meta = SampleMeta.model_validate_json(meta_line)
            except (OSError, ValueError) as exc:  # ValidationError is a ValueError
                log.warning("sample spool: removing %s, not a whole sample: %s", path.name, exc)
                path.unlink(missing_ok=True)
                continue
            if len(blob) != meta.size:
                log.warning("sample spool: removing %s, cut short", path.name)
                path.unlink(missing_ok=True)
                continue
            size = len(meta_line) + 1 + len(blob)
            found.append((meta, SpoolEntry(meta.id, meta.pipeline, size, path)))
        found.sort(key=lambda item: (item[0].ts, item[0].id))
        for _, entry in found:
            self._add(entry)
        for victim in self._over_bounds():
            _unlink(victim)
        if self._index:
            log.info("sample spool %s: %d sample(s) wait for upload", self.root, len(self._index))


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:  # a nearly full disk may take part of it: write the rest or fail
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _unlink(entry: SpoolEntry) -> None:
    entry.path.unlink(missing_ok=True)
