"""A claimed training job runs in a child process (multiprocessing ``spawn``) that its worker
watches and can end.

Why a process and not a check between steps: a trainer is a pure function that can run for
minutes without a step, and a thread cannot be stopped. A child can be, so one mechanism
covers every case: the worker renews the lease while the child trains; a cancel, or a lease
lost to another worker (the renewal finds the job no longer its own, or it could not renew
until just before the lease runs out), ends the child at once, so no job is trained twice; a
worker asked to stop ends the child and puts the job back in the queue with the reason, so
shutdown never waits for a training; and a trainer that runs out of memory (or crashes) kills
only its child, and the job fails with the reason instead of the API going down.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_api.db import create_db_engine, create_sessionmaker
from cloud_api.registry import ArtifactStore
from cloud_api.training import jobs
from cloud_api.training.run import Context, Runner

log = logging.getLogger(__name__)

_SPAWN = multiprocessing.get_context("spawn")
PARENT_CHECK_S = 1.0
HALT_GRACE_S = 10.0
"""Seconds a child has to end after SIGTERM before it is killed."""


@dataclass(frozen=True)
class Recipe:
    """What a child needs to build its own ``Context`` (what crosses the process boundary)."""

    database_url: str
    store: ArtifactStore
    signing_key: bytes
    tmp_dir: Path
    max_model_bytes: int
    lease: timedelta
    log_level: int
    setup: Callable[[], None] | None
    """Run in the child before the job (a module-level function: it is pickled)."""

    @classmethod
    def of(cls, context: Context, setup: Callable[[], None] | None) -> Recipe:
        """The recipe of a worker's context."""
        return cls(
            database_url=context.database_url,
            store=context.store,
            signing_key=context.signing_key.private_bytes_raw(),
            tmp_dir=context.tmp_dir,
            max_model_bytes=context.max_model_bytes,
            lease=context.lease,
            log_level=logging.getLogger().getEffectiveLevel(),
            setup=setup,
        )


def run_in_child(recipe: Recipe, job_id: int, token: str) -> None:
    """The child's entry: run the job with its own database engine."""
    logging.basicConfig(level=recipe.log_level, format="%(levelname)s %(name)s: %(message)s")
    threading.Thread(
        target=end_with_parent, args=(os.getppid(),), name="training-parent", daemon=True
    ).start()
    if recipe.setup is not None:
        recipe.setup()
    engine = create_db_engine(recipe.database_url)
    try:
        context = Context(
            database_url=recipe.database_url,
            sessions=create_sessionmaker(engine),
            store=recipe.store,
            signing_key=Ed25519PrivateKey.from_private_bytes(recipe.signing_key),
            tmp_dir=recipe.tmp_dir,
            max_model_bytes=recipe.max_model_bytes,
            lease=recipe.lease,
        )
        with context.sessions() as session:
            Runner(context, session, job_id, token).run()
    finally:
        engine.dispose()


def end_with_parent(parent: int) -> None:
    """End this child when its worker is gone (killed outright): nobody renews its lease, so
    another worker will take the job."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    log.warning("training worker %s is gone; ending its training", parent)
    os._exit(1)


@dataclass
class Supervisor:
    """Runs one claimed job in a child and watches it until it ends or must be ended."""

    context: Context
    recipe: Recipe
    stop: threading.Event
    check_s: float
    """Seconds between lease renewals (which also notice a cancel)."""

    def run(self, job_id: int, token: str) -> None:
        """Until the job has ended, was taken from this worker, or the worker stops."""
        child = _SPAWN.Process(
            target=run_in_child, args=(self.recipe, job_id, token), name=f"training-job-{job_id}"
        )
        child.start()
        renewed = tried = time.monotonic()
        try:
            while True:
                child.join(min(self.check_s, 0.25))
                if child.exitcode is not None:
                    break
                if self.stop.is_set():
                    _halt(child)
                    self._release(job_id, token)
                    return
                now = time.monotonic()
                if now - tried < self.check_s:
                    continue
                tried = now
                ours = self._renew(job_id, token)
                if ours:
                    renewed = now
                elif ours is False or now - renewed > self._give_up_s:
                    why = "it is no longer this worker's" if ours is False else "lease expiring"
                    log.warning("training job %s: %s; ending its run", job_id, why)
                    _halt(child)
                    return
            if child.exitcode != 0:
                self._died(job_id, token, child.exitcode)
        finally:
            if child.is_alive():
                _halt(child)

    @property
    def _give_up_s(self) -> float:
        """Seconds without a renewal after which the run ends: before the lease runs out and
        another worker may take the job, by two renewal periods."""
        return self.context.lease.total_seconds() - 2 * self.check_s

    def _renew(self, job_id: int, token: str) -> bool | None:
        """Renew the lease: whether the job is still ours (None: the database did not answer)."""
        try:
            with self.context.sessions() as session:
                return jobs.report(session, job_id, token, lease=self.context.lease)
        except Exception:
            log.exception("training job %s: renewing the lease failed", job_id)
            return None

    def _release(self, job_id: int, token: str) -> None:
        with self.context.sessions() as session:
            jobs.release(session, job_id, token, reason="its worker stopped; queued again")

    def _died(self, job_id: int, token: str, exitcode: int) -> None:
        if exitcode < 0:
            name = signal.Signals(-exitcode).name
            how = f"killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
        else:
            how = f"exit code {exitcode}"
        with self.context.sessions() as session:
            jobs.finish(
                session, job_id, token, state="failed", reason=f"the training process died: {how}"
            )


def _halt(child: multiprocessing.process.BaseProcess) -> None:
    """End the child: SIGTERM, then SIGKILL if it lingers."""
    child.terminate()
    child.join(HALT_GRACE_S)
    if child.is_alive():
        child.kill()
        child.join()
