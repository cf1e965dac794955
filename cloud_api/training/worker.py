"""The training worker: a thread that re-queues jobs whose worker died, claims the oldest
queued job and runs it, one at a time; in the API's process (``AIOT_TRAINING_ENABLED``) and
as ``aiot cloud train-worker`` processes, any number of them on one database.

While a job runs, a heartbeat thread renews its lease every third of it, so a long training
step keeps the job; a worker that dies stops renewing, and another worker re-queues the job
once the lease has run out.
"""

from __future__ import annotations

import logging
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.orm import Session, sessionmaker

from cloud_api.config import Settings
from cloud_api.registry import ArtifactStore
from cloud_api.training import jobs
from cloud_api.training.run import Context, Runner
from shared.messages import utcnow

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
"""A job whose workers died this many times is failed, not re-queued again."""


def worker_name() -> str:
    """A name for this worker: the host, the process and a random part."""
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


class TrainingWorker:
    """Claims and runs training jobs every ``poll_s`` until stopped."""

    def __init__(
        self,
        context: Context,
        *,
        poll_s: float = 2.0,
        name: str | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._context = context
        self._poll_s = poll_s
        self.name = name or worker_name()
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread."""
        self._thread = threading.Thread(target=self._loop, name="training-worker", daemon=True)
        self._thread.start()
        log.info("training worker %s started", self.name)

    def stop(self) -> None:
        """Stop after the job in hand (its lease keeps it from others meanwhile) and join."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                ran = self.run_once()
            except Exception:  # the database may be away: log, wait, try again
                log.exception("training worker %s: a round failed", self.name)
                ran = None
            if ran is None:
                self._stop.wait(self._poll_s)

    def run_once(self) -> int | None:
        """Re-queue expired jobs, then claim and run one job; its id, or None if none was queued."""
        with self._context.sessions() as session:
            jobs.requeue_expired(session, now=self._clock(), max_attempts=MAX_ATTEMPTS)
            claimed = jobs.claim(session, worker=self.name, lease=self._context.lease)
        if claimed is None:
            return None
        job_id, token = claimed
        beat = threading.Event()
        heartbeat = threading.Thread(
            target=self._heartbeat, args=(job_id, token, beat), name="training-lease", daemon=True
        )
        heartbeat.start()
        try:
            with self._context.sessions() as session:
                Runner(self._context, session, job_id, token).run()
        finally:
            beat.set()
            heartbeat.join()
        return job_id

    def _heartbeat(self, job_id: int, token: str, done: threading.Event) -> None:
        """Renew the job's lease every third of it until ``done``."""
        every = self._context.lease.total_seconds() / 3
        while not done.wait(every):
            try:
                with self._context.sessions() as session:
                    if not jobs.report(session, job_id, token, lease=self._context.lease):
                        return
            except Exception:
                log.exception("training job %s: renewing the lease failed", job_id)


def training_context(
    settings: Settings,
    *,
    sessions: sessionmaker[Session],
    store: ArtifactStore,
    signing_key: Ed25519PrivateKey,
) -> Context:
    """What a runner needs, from the settings and the process's database, store and key."""
    return Context(
        sessions=sessions,
        store=store,
        signing_key=signing_key,
        tmp_dir=settings.data_dir / "uploads",
        max_model_bytes=settings.max_model_bytes,
        lease=timedelta(seconds=settings.training_lease_s),
    )


def start_training(
    settings: Settings,
    *,
    sessions: sessionmaker[Session],
    store: ArtifactStore,
    signing_key: Ed25519PrivateKey,
) -> TrainingWorker | None:
    """The API's in-process training worker, started (None when training runs elsewhere)."""
    if not settings.training_enabled:
        return None
    context = training_context(settings, sessions=sessions, store=store, signing_key=signing_key)
    worker = TrainingWorker(context, poll_s=settings.training_poll_s)
    worker.start()
    return worker
