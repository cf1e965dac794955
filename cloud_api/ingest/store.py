"""A batch of messages into the database: parsed, committed, outages waited out.

One bad message never takes its neighbours with it: a batch the database refuses is split in
halves, and the halves again, until the message it refuses stands alone; that one becomes a
dead letter with the database's reason, and everything else is stored and acknowledged. A
database that is down (not refusing data) is retried with backoff until it answers or the
worker stops. A retained message that is a dead letter is kept once, not again at every
reconnect: the ones committed are remembered.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from cloud_api.ingest.parse import Inbound, RetainedKey, Work, dead_letter, first_line, parse
from cloud_api.ingest.writers import BatchStats, Writer, is_transient
from shared.messages import BatchAck

log = logging.getLogger(__name__)

RETRY_MAX_S = 5.0
RETAINED_DEAD_KEPT = 10_000
"""Retained dead letters remembered in memory, so the broker's replay is not kept again."""


@dataclass(frozen=True, slots=True)
class Stored:
    """What storing a batch did, and the acks to publish for it."""

    stats: BatchStats
    acks: list[tuple[str, BatchAck]]

    def __add__(self, other: Stored) -> Stored:
        return Stored(self.stats + other.stats, self.acks + other.acks)


class BatchStore:
    """Stores batches of messages with ``writer``; gives up waiting for the database when
    ``stop`` is set."""

    def __init__(self, writer: Writer, *, stop: threading.Event) -> None:
        self._writer = writer
        self._stop = stop
        self._retained_dead: dict[RetainedKey, None] = {}  # insertion-ordered: oldest first

    @property
    def parse_ahead(self) -> bool:
        """Whether to ``parse`` the next batch while this one is stored (``Writer``)."""
        return self._writer.parse_ahead

    def parse(self, batch: list[Inbound]) -> Work:
        """The rows and acks of ``batch`` (retained dead letters stored already left out)."""
        work = parse(batch, kept=self._retained_dead)
        self._writer.prepare(work)
        return work

    def store(self, batch: list[Inbound], work: Work | None = None) -> Stored | None:
        """Commit the batch (``work``: what ``parse`` made of it, if parsed already),
        isolating what the database refuses; None if stopped while the database was
        unavailable."""
        if work is None:
            work = self.parse(batch)
        try:
            stats = self._commit_retrying(work, len(batch))
        except Exception as exc:  # data the database refuses, or a bug: find the culprit
            if len(batch) == 1:
                reason = f"database refused it: {first_line(exc)}"
                log.warning("dead-lettered a message on %s: %s", batch[0].topic, reason)
                return self._store_dead(batch[0], reason)
            half = len(batch) // 2
            first = self.store(batch[:half])
            second = self.store(batch[half:]) if first is not None else None
            if first is None or second is None:
                return None
            return first + second
        if stats is None:
            return None
        self._remember_retained_dead(work)
        return Stored(stats, work.acks)

    def _store_dead(self, message: Inbound, reason: str) -> Stored | None:
        work = Work()
        dead_letter(work, message, reason, kept=self._retained_dead)
        try:
            stats = self._commit_retrying(work, 1)
        except Exception:  # a dead letter is built to be storable: this is a bug
            log.exception("cannot store a dead letter for %s; dropping it", message.topic)
            return Stored(BatchStats(messages=1), [])
        if stats is None:
            return None
        self._remember_retained_dead(work)
        return Stored(stats, work.acks)

    def _commit_retrying(self, work: Work, messages: int) -> BatchStats | None:
        """Commit, waiting out database outages (None if stopped meanwhile). Data errors raise."""
        delay = 0.1
        failing = False
        while True:
            try:
                stats = self._writer.commit(work, messages)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                if not failing:
                    log.error("ingest cannot write to the database: %s; retrying", exc)
                    failing = True
                if self._stop.wait(delay):
                    return None
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            if failing:
                log.info("ingest writes to the database again")
            return stats

    def _remember_retained_dead(self, work: Work) -> None:
        for key in work.retained_dead:
            if len(self._retained_dead) >= RETAINED_DEAD_KEPT:
                self._retained_dead.pop(next(iter(self._retained_dead)))
            self._retained_dead[key] = None
