"""Escalation at the edge: unsure results go to the pipeline's cloud model, within a budget.

A pipeline with ``escalate:`` (``escalation_config.EscalateConfig``) compares each result's
score with its band; that is all the hot path does for a result outside it. A result inside
asks the token bucket (``budget_per_min``), and an input the bucket lets through is copied
and handed, through a bounded queue, to the agent's one escalation thread. That thread
encodes the input as a sample would be (the collector's encoders: a ``.npy`` window, or a
JPEG crop or frame under the privacy policy, blurred as it says), wraps it with the edge's
answer in an ``Escalation`` and puts it in the outbox, where it waits behind the events and
ahead of the summaries until the cloud's ``EscalationResult`` takes it out (the uplink sends
it again after an outage, like an event batch).

While the uplink is offline, ``offline: queue`` keeps new escalations waiting (at most
``queue_max`` unanswered per pipeline; more are dropped) and ``offline: drop`` drops them;
both are counted. When the pipeline collects (``collect:``), what is sent is also kept as a
sample (reason ``escalated``, within the collector's caps) and the escalation names it. The
result comes back on the uplink's thread (``EscalationDesk.answered``):
an answer becomes a reconciled event (kind ``escalation``, linked to the edge event), which
the pipeline emits between two samples through the same path as its own events, so local
actions can match it; a refusal is counted by reason and emits nothing.

The outbox holds the bookkeeping, so a crash loses none of it: the reconciled event is
stored in the transaction that takes the escalation out (``Outbox.take``) and leaves it when
the pipeline stores it as an event; an escalator starts with those a previous run did not
emit. The unanswered escalations are counted in the outbox (``waiting_escalations``), so one
it dropped for age or size frees its place.

(Over 400 lines: the per-pipeline escalator and the agent's desk share one bookkeeping.)
"""

from __future__ import annotations

import base64
import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy.typing as npt
from pydantic import ValidationError

from edge_agent.delivery.escalation_config import EscalateConfig
from edge_agent.delivery.outbox import RECONCILED_KIND, Outbox
from edge_agent.delivery.spool import PendingSample, Spool
from edge_agent.inference.postprocess import Detection
from edge_agent.pipelines.collect import Collector, Encoder, Kept
from shared.errors import StorageError
from shared.escalations import MAX_ESCALATION_BYTES, Escalation, EscalationResult
from shared.messages import Event, ModelRef, encode, new_event_id
from shared.samples import SampleMeta
from shared.token_bucket import TokenBucket

log = logging.getLogger(__name__)

EVENT_KIND = RECONCILED_KIND
"""The kind of a reconciled event (the outbox keeps them until the pipeline emits them)."""
QUEUE_SIZE = 64
"""Escalated inputs waiting for the escalation thread; more are dropped (counted offline)."""


@dataclass(slots=True)
class EscalationCounters:
    """What a pipeline's escalation did since the agent started."""

    escalated: int = 0
    answered: int = 0
    agreed: int = 0
    dropped_budget: int = 0
    dropped_offline: int = 0
    queued: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    """By reason: the cloud's refusals, and inputs the privacy policy or size kept here."""

    def status(self) -> dict[str, int]:
        """The counters as ``PipelineStatus`` fields."""
        return {
            "escalated": self.escalated,
            "escalations_answered": self.answered,
            "escalations_agreed": self.agreed,
            "escalations_dropped_budget": self.dropped_budget,
            "escalations_dropped_offline": self.dropped_offline,
            "escalations_queued": self.queued,
            "escalations_refused": sum(self.refused.values()),
        }


@dataclass(slots=True)
class _Input:
    escalator: Escalator
    kept: Kept
    chosen: Detection | None
    sample: bool
    """Also keep what is sent as a sample (reason ``escalated``): the collector admitted it."""


class Escalator:
    """The ``escalate:`` of one pipeline: the band, the bucket, the counters, the answers."""

    def __init__(
        self,
        config: EscalateConfig,
        *,
        pipeline: str,
        encoder: Encoder,
        desk: EscalationDesk,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.pipeline = pipeline
        self.lo, self.hi = config.band
        self.counters = EscalationCounters()
        self.answers: deque[Event] = deque()
        """Reconciled events for the pipeline to emit (appended on the uplink's thread)."""
        self._late: Callable[[Event], None] | None = None
        self._late_lock = threading.Lock()
        self._bucket = TokenBucket(config.budget_per_min, clock)
        self._encoder = encoder
        self._desk = desk

    def offer(
        self,
        data: npt.NDArray[Any],
        score: float,
        label: str,
        ts: float,
        model: ModelRef,
        *,
        event_id: str | None = None,
        detections: Sequence[Detection] = (),
        chosen: Detection | None = None,
        collector: Collector | None = None,
    ) -> None:
        """An input whose score is in the band (the caller checked): escalate it if the
        budget allows. ``chosen``: the unsure detection of a frame (its crop is sent). The
        pipeline's ``collector``, if any, keeps what is sent as a sample, caps permitting."""
        if not self._bucket.take():
            self.counters.dropped_budget += 1
            return
        kept = Kept(data.copy(), score, label, ts, "escalated", model, event_id, detections)
        sample = collector is not None and collector.admit("escalated", ts)
        if not self._desk.submit(_Input(self, kept, chosen, sample)):
            self.counters.dropped_offline += 1

    def offer_detections(
        self,
        frame: npt.NDArray[Any],
        detections: Sequence[Detection],
        ts: float,
        model: ModelRef,
        event_id: str | None,
        collector: Collector | None = None,
    ) -> None:
        """A camera frame: escalated for its first detection in the band, if any."""
        lo, hi = self.lo, self.hi
        unsure = next((d for d in detections if lo <= d.score <= hi), None)
        if unsure is not None:
            self.offer(
                frame, unsure.score, unsure.label, ts, model,
                event_id=event_id, detections=detections, chosen=unsure, collector=collector,
            )  # fmt: skip

    def after_run(self, emit: Callable[[Event], None]) -> list[Event]:
        """The pipeline's run has ended: answers from now on go straight to ``emit`` (on the
        uplink's thread); returns those that arrived before."""
        with self._late_lock:
            self._late = emit
            return self.take_answers()

    def take_answers(self) -> list[Event]:
        """The reconciled events that arrived (the pipeline's thread calls this)."""
        answers = self.answers
        return [answers.popleft() for _ in range(len(answers))]

    def encode(self, item: _Input, agent_id: str) -> tuple[SampleMeta, bytes] | None:
        """The input as a sample would hold it: the crop of the chosen detection, or the
        frame or window; None if the privacy policy lets nothing of it leave."""
        return _pick(self._encoder(item.kept, agent_id), item.chosen)

    def message(
        self, item: _Input, meta: SampleMeta, blob: bytes, sample_id: str | None
    ) -> Escalation:
        """The escalation of one encoded input (``sample_id``: the sample kept of it)."""
        kept = item.kept
        return Escalation(
            id=new_event_id(),
            agent_id=meta.agent_id,
            pipeline=self.pipeline,
            ts=meta.ts,
            model=kept.model,
            label=kept.label,
            score=kept.score,
            event_id=kept.event_id,
            sample_id=sample_id,
            kind=meta.kind,
            window=meta.window,
            image=meta.image,
            privacy=meta.privacy,
            data=base64.b64encode(blob).decode("ascii"),
        )

    def answered(self, result: EscalationResult, event: Event | None) -> None:
        """The cloud's result for one of ours, its reconciled event (``reconcile``) stored:
        count it, and hand the event to the pipeline."""
        if event is None:
            self.counters.refused[result.reason] += 1
            log.warning("pipeline %s: the cloud refused an escalation: %s",
                        self.pipeline, result.reason)  # fmt: skip
            return
        self.counters.answered += 1
        self.counters.agreed += event.attributes["agree"] is True
        self.deliver(event)

    def deliver(self, event: Event) -> None:
        """A reconciled event for the pipeline: emitted between two samples, or at once
        once the run has ended."""
        with self._late_lock:
            late = self._late
            if late is None:  # the pipeline's thread emits it between two samples
                self.answers.append(event)
                return
        late(event)  # the run has ended (a finite source): nobody else emits any more


def reconcile(result: EscalationResult, escalation: Escalation) -> Event | None:
    """The cloud's answer as an event of the pipeline, linked to the edge's event; None for
    a refusal."""
    model, label, score = result.model, result.label, result.score
    if result.outcome == "refused" or model is None or label is None or score is None:
        return None
    agree = label == escalation.label
    attributes: dict[str, str | float | bool] = {
        "escalation_id": escalation.id,
        "edge_label": escalation.label,
        "edge_score": escalation.score,
        "edge_model_version": escalation.model.version,
        "cloud_label": label,
        "cloud_score": score,
        "cloud_model": model.name,
        "cloud_model_version": model.version,
        "agree": agree,
    }
    if escalation.event_id is not None:
        attributes["edge_event_id"] = escalation.event_id
    if escalation.sample_id is not None:
        attributes["sample_id"] = escalation.sample_id
    return Event(
        id=new_event_id(),
        pipeline=escalation.pipeline,
        kind=EVENT_KIND,
        state="instant",
        label=label,
        score=score,
        ts=result.ts,
        seq=0,  # numbered by the pipeline when it emits it
        model=model,
        attributes=attributes,
    )


def _pick(
    samples: list[tuple[SampleMeta, bytes]], chosen: Detection | None
) -> tuple[SampleMeta, bytes] | None:
    """The sample to send: the crop of the chosen detection if there is one, else the first
    (a window, or the frame); None when there is none."""
    if chosen is not None:
        for meta, blob in samples:
            shown = meta.image.detections[:1] if meta.image is not None else []
            if any(d.label == chosen.label and abs(d.score - chosen.score) < 1e-6 for d in shown):
                return meta, blob
    return samples[0] if samples else None


class EscalationDesk:
    """The agent's escalations: one thread that encodes and stores them, and the results.

    ``online`` says whether the uplink is connected; ``clock`` runs the budgets' buckets
    (a test may stop it). ``max_waiting`` bounds the unanswered
    escalations of all pipelines together: the uplink's window of unacknowledged batches
    is shared with the events, which a cloud model runner that is down must not block.
    ``answered`` is the uplink's handler for a result (its sender thread): it takes the
    escalation out of the outbox, storing its reconciled event in the same transaction, and
    hands both to the pipeline's escalator.
    """

    def __init__(
        self,
        agent_id: str,
        outbox: Outbox,
        online: Callable[[], bool],
        spool: Spool | None = None,
        *,
        max_waiting: int = 128,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.agent_id = agent_id
        self._clock = clock
        self._outbox = outbox
        self._spool = spool
        self._max_waiting = max_waiting
        self._online = online
        self._escalators: dict[str, Escalator] = {}
        self._queue: queue.Queue[_Input | None] = queue.Queue(QUEUE_SIZE)
        self._thread: threading.Thread | None = None

    def escalator(
        self,
        config: EscalateConfig,
        pipeline: str,
        encoder: Encoder,
        clock: Callable[[], float] | None = None,
    ) -> Escalator:
        """The escalator of one pipeline, registered to receive its results; it starts with
        the reconciled events the outbox holds for the pipeline (a previous run stored them
        and did not emit them). Build it before the uplink runs: answers arrive from then."""
        escalator = Escalator(
            config, pipeline=pipeline, encoder=encoder, desk=self, clock=clock or self._clock
        )
        try:
            escalator.answers.extend(self._outbox.answers(pipeline))
        except ValidationError as exc:  # an agent of another version stored them
            log.warning("pipeline %s: cannot read its stored answers: %s", pipeline, exc)
        self._escalators[pipeline] = escalator
        return escalator

    def submit(self, item: _Input) -> bool:
        """Hand an input to the thread without waiting; False if its queue is full."""
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            return False
        return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="escalations", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Store what is queued, then end the thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def flush(self) -> None:
        """Wait until every submitted input is stored or dropped (tests, benchmarks)."""
        self._queue.join()

    def answered(self, result: EscalationResult) -> None:
        """A result arrived: its escalation leaves the outbox, its reconciled event stored in
        the same transaction, and both go to its pipeline."""
        item_id = result.escalation_id
        try:
            payload = self._outbox.peek(item_id)
            if payload is None:
                return  # answered before (a resend's second answer), or not ours
            try:
                escalation = Escalation.model_validate_json(payload)
            except ValidationError as exc:
                log.error("an escalation in the outbox does not read back: %s", exc)
                self._outbox.take(item_id)
                return
            escalator = self._escalators.get(escalation.pipeline)
            event = reconcile(result, escalation) if escalator is not None else None
            if self._outbox.take(item_id, event) is None:
                return  # another answer took it meanwhile
        except StorageError as exc:  # it stays, goes again, and the cloud answers it again
            log.error("cannot take escalation %s from the outbox: %s", item_id, exc)
            return
        if escalator is None:
            log.info("escalation %s answered for pipeline %s, which no longer escalates",
                     escalation.id, escalation.pipeline)  # fmt: skip
            return
        escalator.answered(result, event)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                self._store(item)
            except Exception:  # encoding or the outbox: the thread must live
                item.escalator.counters.refused["error"] += 1
                log.exception("pipeline %s: cannot escalate an input", item.escalator.pipeline)
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def _store(self, item: _Input) -> None:
        """Put one input in the outbox, as the offline policy and bounds allow; keep it as
        a sample if the collector admitted it (whether or not it is sent)."""
        escalator = item.escalator
        counters = escalator.counters
        online = self._online()
        send = self._may_send(escalator, online)
        if not send:
            counters.dropped_offline += 1
            if not item.sample:
                return
        encoded = escalator.encode(item, self.agent_id)
        if encoded is None:
            counters.refused["privacy"] += send
            return
        meta, blob = encoded
        kept = item.sample and self._spool is not None
        if kept and self._spool is not None:
            self._spool.submit(PendingSample(escalator.pipeline, lambda: [(meta, blob)]))
        if not send:
            return
        if len(blob) > MAX_ESCALATION_BYTES:
            counters.refused["too large"] += 1
            return
        escalation = escalator.message(item, meta, blob, meta.id if kept else None)
        self._outbox.put_escalation(escalation.id, encode(escalation), pipeline=escalator.pipeline)
        counters.escalated += 1
        counters.queued += not online

    def _may_send(self, escalator: Escalator, online: bool) -> bool:
        """Whether an escalation may wait for its answer: online, or ``offline: queue``;
        fewer than ``queue_max`` of the pipeline's and ``max_waiting`` of all unanswered in
        the outbox (what it dropped for age or size waits no more)."""
        if not online and escalator.config.offline == "drop":
            return False
        waiting = self._outbox.waiting_escalations()
        mine = waiting.get(escalator.pipeline, 0)
        return mine < escalator.config.queue_max and sum(waiting.values()) < self._max_waiting
