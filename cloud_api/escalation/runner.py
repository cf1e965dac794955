"""One batch of escalations from validation to answers: repeats answered from SQL, the quota,
each pipeline's cloud model, one session run per model for the batch's inputs, and the
answers stored; what the worker publishes comes back. No MQTT here. A classifier
(``model.py``) answers windows, a detector (``detector.py``) answers JPEG crops and frames.

A repeated id (a resend, or twice in one batch) is run once: the stored answer, or the
batch's first answer, is given again. A refusal (no cloud model, over quota, an input that
does not decode or fit) is an answer too, stored and sent, except a model that fails
(``model_error``): that may pass, so the refusal is sent but not stored, and a resend is run
again. A batch run that fails is run again one input at a time, so only the input the model
fails on is refused. A payload that is not an escalation becomes a dead letter; one that is
but cannot be handled (it names another agent, or the runner fails on it) becomes a dead
letter and a refusal, so the agent stops sending it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from cloud_api.escalation.detector import CloudDetector, ImageInput, detector_output
from cloud_api.escalation.inputs import (
    AnyModel,
    ModelInput,
    RefusedError,
    dead_letter_row,
    model_input,
    parse,
    split,
)
from cloud_api.escalation.model import Answer, CloudModel
from cloud_api.escalation.quota import Quota
from cloud_api.escalation.store import escalation_row, save, stored_results
from cloud_api.ingest.parse import Inbound
from cloud_api.ingest.writers import is_transient
from cloud_api.queries.escalations import get_cloud_model
from cloud_api.queries.models import get_model_version
from cloud_api.registry import ArtifactStore, artifact_key
from shared.errors import ModelError
from shared.escalations import Escalation, EscalationResult
from shared.messages import ModelRef, utcnow
from shared.topics import Channel, Topic

log = logging.getLogger(__name__)

UNSTORED_KINDS = frozenset({"model_error"})
"""Refusals that may pass (a model that fails or cannot load): sent, never stored."""

Answers = list[tuple[str, EscalationResult]]
"""(topic, result) pairs to publish."""


@dataclass(slots=True)
class RunStats:
    """What one batch (or, added up, a runner's life) did."""

    messages: int = 0
    answered: int = 0
    refused: int = 0
    repeats: int = 0
    dead_letters: int = 0
    batch_sizes: list[int] = field(default_factory=list)
    """Inputs of each session run of this batch (not kept when stats are added up)."""
    session_runs: int = 0
    inputs_run: int = 0
    largest_batch: int = 0
    loop_failures: int = 0
    """Times the worker's loop failed on a batch and tried it again after a pause."""
    outcomes: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """(agent, pipeline, what): ``agree``, ``disagree`` or ``refused:<kind>``."""

    def __iadd__(self, other: RunStats) -> RunStats:
        self.messages += other.messages
        self.answered += other.answered
        self.refused += other.refused
        self.repeats += other.repeats
        self.dead_letters += other.dead_letters
        self.session_runs += other.session_runs
        self.inputs_run += other.inputs_run
        self.largest_batch = max(self.largest_batch, other.largest_batch)
        self.loop_failures += other.loop_failures
        self.outcomes.update(other.outcomes)
        return self


@dataclass(slots=True)
class _Pending:
    escalation: Escalation
    model: AnyModel
    input: ModelInput


@dataclass(slots=True)
class _Batch:
    """One batch's work in hand."""

    stats: RunStats
    fresh: dict[str, EscalationResult] = field(default_factory=dict)
    """Answers given in this batch, by escalation id."""
    unstored: set[str] = field(default_factory=set)
    """Ids whose answer is sent but not stored (a refusal that may pass)."""
    pending: list[_Pending] = field(default_factory=list)
    resolved: dict[str, AnyModel | RefusedError] = field(default_factory=dict)
    """Each pipeline's model (or why it has none), looked up once per batch."""

    def refuse(self, escalation: Escalation, refusal: RefusedError) -> None:
        self.fresh[escalation.id] = _refused(escalation, str(refusal))
        if refusal.kind in UNSTORED_KINDS:
            self.unstored.add(escalation.id)
        self.stats.refused += 1
        key = (escalation.agent_id, escalation.pipeline, f"refused:{refusal.kind}")
        self.stats.outcomes[key] += 1


class Runner:
    """Answers batches of escalations with the pipelines' cloud models (loaded once each)."""

    def __init__(
        self,
        *,
        engine: Engine,
        artifacts: ArtifactStore,
        quota: Quota,
        batch_max: int,
        threads: int = 0,
    ) -> None:
        self._engine = engine
        self._artifacts = artifacts
        self._quota = quota
        self._batch_max = batch_max
        self._threads = threads
        self._models: dict[tuple[str, str, str, str | None], AnyModel] = {}
        """Loaded models by name, version, sha256 and the normal label set with them."""

    def handle(self, batch: list[Inbound]) -> tuple[Answers, RunStats]:
        """Answer ``batch``: the (topic, result) pairs to publish, and what was done."""
        parts = split(batch)
        escalations = parts.escalations
        work = _Batch(RunStats(messages=len(batch), dead_letters=len(parts.dead)))
        given = stored_results(self._engine, list({e.id for e in escalations}))
        new: dict[str, Escalation] = {}
        for escalation in escalations:
            if escalation.id in given or escalation.id in new:
                work.stats.repeats += 1
                continue
            new[escalation.id] = escalation
            if (refusal := parts.refusals.get(escalation.id)) is not None:
                work.refuse(escalation, refusal)
            else:
                self._admit(escalation, work)
        self._run(work)
        rows = [
            escalation_row(e, work.fresh[e.id]) for e in new.values() if e.id not in work.unstored
        ]
        given.update(work.fresh)
        given.update(save(self._engine, rows, parts.dead))
        return [(_topic(e), given[e.id]) for e in escalations], work.stats

    def dead_letter(self, message: Inbound, reason: str) -> tuple[Answers, RunStats]:
        """Keep ``message``, which the runner failed on, as a dead letter with ``reason``; an
        escalation in it is refused with that reason too (stored, so a resend gets the same
        answer), and the refusal comes back to be sent. Database errors propagate."""
        row = dead_letter_row(message, reason)
        stats = RunStats(messages=1, dead_letters=1)
        parsed = parse(message)
        if isinstance(parsed, str):
            save(self._engine, [], [row])
            return [], stats
        escalation = parsed[0]
        given = stored_results(self._engine, [escalation.id])
        if escalation.id not in given:
            work = _Batch(stats)
            work.refuse(escalation, RefusedError("failed", reason))
            result = work.fresh[escalation.id]
            try:
                given = save(self._engine, [escalation_row(escalation, result)], [row])
            except Exception as exc:
                if is_transient(exc):
                    raise
                log.exception("the refusal of escalation %s cannot be stored", escalation.id)
                given = save(self._engine, [], [row])
            return [(_topic(escalation), given.get(escalation.id, result))], stats
        save(self._engine, [], [row])
        stats.repeats += 1
        return [(_topic(escalation), given[escalation.id])], stats

    def _admit(self, escalation: Escalation, work: _Batch) -> None:
        """Queue ``escalation`` for its cloud model, or refuse it now."""
        try:
            if not self._quota.take(escalation.agent_id, escalation.id):
                raise RefusedError(
                    "quota", f"over quota: agent {escalation.agent_id!r} escalates too often"
                )
            if escalation.pipeline not in work.resolved:
                try:
                    work.resolved[escalation.pipeline] = self._model_for(escalation.pipeline)
                except RefusedError as refusal:
                    work.resolved[escalation.pipeline] = refusal
            model = work.resolved[escalation.pipeline]
            if isinstance(model, RefusedError):
                raise model
            work.pending.append(_Pending(escalation, model, model_input(escalation, model)))
        except RefusedError as refusal:
            work.refuse(escalation, refusal)

    def _model_for(self, pipeline: str) -> AnyModel:
        with Session(self._engine) as session:
            entry = get_cloud_model(session, pipeline)
            if entry is None:
                raise RefusedError("no_model", f"no cloud model for pipeline {pipeline!r}")
            version = get_model_version(session, name=entry.model, version=entry.version)
            if version is None:
                raise RefusedError(
                    "no_model", f"cloud model {entry.model} {entry.version} is not registered"
                )
            key = (version.name, version.version, version.sha256, entry.normal_label)
            labels = list(version.labels)
            output = version.outputs[0]["shape"] if version.outputs else []
        if key in self._models:
            return self._models[key]
        try:
            data = self._artifacts.get(artifact_key(key[0], key[1]))
            model: AnyModel
            if detector_output(labels, output):
                model = CloudDetector(
                    data, name=key[0], version=key[1], sha256=key[2], labels=labels,
                    threads=self._threads,
                )  # fmt: skip
            else:
                model = CloudModel(
                    data, name=key[0], version=key[1], sha256=key[2], labels=labels,
                    normal_label=key[3], threads=self._threads,
                )  # fmt: skip
        except (OSError, ModelError) as exc:
            raise RefusedError(
                "model_error", f"cloud model {key[0]} {key[1]} cannot run: {exc}"
            ) from None
        self._models[key] = model
        return model

    def _run(self, work: _Batch) -> None:
        """One session run per model per ``batch_max`` inputs."""
        by_model: dict[int, list[_Pending]] = {}
        for item in work.pending:
            by_model.setdefault(id(item.model), []).append(item)
        for items in by_model.values():
            for start in range(0, len(items), self._batch_max):
                self._run_chunk(items[start : start + self._batch_max], work)

    def _run_chunk(self, chunk: list[_Pending], work: _Batch) -> None:
        """One session run for ``chunk``; when it fails, one run per input, so that only the
        inputs the model fails on are refused."""
        model = chunk[0].model
        started = time.perf_counter()
        try:
            answers = _run_model(model, [item.input for item in chunk])
        except ModelError as exc:
            if len(chunk) > 1:
                log.warning("cloud model %s failed on a batch; one by one: %s", model.name, exc)
                for item in chunk:
                    self._run_chunk([item], work)
                return
            work.refuse(chunk[0].escalation, RefusedError("model_error", str(exc)))
            return
        share_ms = (time.perf_counter() - started) * 1000.0 / len(chunk)
        stats = work.stats
        stats.batch_sizes.append(len(chunk))
        stats.session_runs += 1
        stats.inputs_run += len(chunk)
        stats.largest_batch = max(stats.largest_batch, len(chunk))
        ref = ModelRef(name=model.name, version=model.version, sha256=model.sha256)
        now = utcnow()
        for item, answer in zip(chunk, answers, strict=True):
            escalation = item.escalation
            work.fresh[escalation.id] = _answered(escalation, ref, answer, share_ms, now)
            stats.answered += 1
            agree = "agree" if answer.label == escalation.label else "disagree"
            stats.outcomes[(escalation.agent_id, escalation.pipeline, agree)] += 1


def _topic(escalation: Escalation) -> str:
    return str(Topic(escalation.agent_id, Channel.ESCALATION_RESULT))


def _run_model(model: AnyModel, inputs: list[ModelInput]) -> list[Answer]:
    """One batch through its model (each model gets the inputs ``model_input`` made)."""
    if isinstance(model, CloudDetector):
        return model.run([item for item in inputs if isinstance(item, ImageInput)])
    return model.run([item for item in inputs if not isinstance(item, ImageInput)])


def _refused(escalation: Escalation, reason: str) -> EscalationResult:
    return EscalationResult(
        escalation_id=escalation.id,
        agent_id=escalation.agent_id,
        pipeline=escalation.pipeline,
        ts=utcnow(),
        outcome="refused",
        reason=" ".join(reason.split())[:500],
    )


def _answered(
    escalation: Escalation, ref: ModelRef, answer: Answer, share_ms: float, now: datetime
) -> EscalationResult:
    return EscalationResult(
        escalation_id=escalation.id,
        agent_id=escalation.agent_id,
        pipeline=escalation.pipeline,
        ts=now,
        outcome="answered",
        model=ref,
        label=answer.label,
        score=answer.score,
        detections=list(answer.detections),
        inference_ms=share_ms,
    )
