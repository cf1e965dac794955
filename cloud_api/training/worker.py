"""The training worker: a thread that re-queues jobs whose worker died, claims the oldest
queued job and runs it, one at a time; in the API's process (``AIOT_TRAINING_ENABLED``) and
as ``aiot cloud train-worker`` processes, any number of them on one database.

Each job runs in a child process that the worker watches (``cloud_api.training.process``): it
renews the job's lease meanwhile, ends the child when the job is cancelled or lost, and on
``stop`` ends it and queues the job again. A worker that dies stops renewing, and another
worker re-queues the job once the lease has run out.
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
from cloud_api.training.process import Recipe, Supervisor
from cloud_api.training.run import Context
from shared.messages import utcnow

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
"""A job whose workers died this many times is failed, not re-queued again."""
CHECK_S = 5.0
"""Seconds between renewals of a running job's lease (at most a third of the lease): how soon
a cancel ends the training."""


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
        check_s: float = CHECK_S,
        child_setup: Callable[[], None] | None = None,
    ) -> None:
        self._context = context
        self._poll_s = poll_s
        self.name = name or worker_name()
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._supervisor = Supervisor(
            context,
            Recipe.of(context, child_setup),
            self._stop,
            check_s=min(check_s, context.lease.total_seconds() / 3),
        )

    def start(self) -> None:
        """Start the thread."""
        self._thread = threading.Thread(target=self._loop, name="training-worker", daemon=True)
        self._thread.start()
        log.info("training worker %s started", self.name)

    def stop(self) -> None:
        """Stop now: a job in hand is ended and queued again for another worker; join."""
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
        self._supervisor.run(job_id, token)
        return job_id


def training_context(
    settings: Settings,
    *,
    sessions: sessionmaker[Session],
    store: ArtifactStore,
    signing_key: Ed25519PrivateKey,
) -> Context:
    """What a runner needs, from the settings and the process's database, store and key."""
    return Context(
        database_url=settings.database_url,
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
