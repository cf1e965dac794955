"""One batch of escalations from validation to answers: repeats answered from SQL, the quota,
each pipeline's cloud model, one session run per model for the batch's inputs, and the
answers stored; what the worker publishes comes back. No MQTT here. A classifier
(``model.py``) answers windows, a detector (``detector.py``) answers JPEG crops and frames.

A repeated id (a resend, or twice in one batch) is run once: the stored answer, or the
batch's first answer, is given again. A refusal (no cloud model, over quota, an input that
does not decode or fit) is an answer too, stored and sent; only a payload that is not an
escalation becomes a dead letter.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from cloud_api.escalation.detector import CloudDetector, ImageInput, detector_output
from cloud_api.escalation.model import Answer, CloudModel, decode_window
from cloud_api.escalation.quota import Quota
from cloud_api.escalation.store import escalation_row, save, stored_results
from cloud_api.ingest.parse import Inbound, dead_row, validation_reason
from cloud_api.queries.escalations import get_cloud_model
from cloud_api.queries.models import get_model_version
from cloud_api.registry import ArtifactStore, artifact_key
from shared.errors import ContractError, ModelError
from shared.escalations import Escalation, EscalationResult
from shared.messages import ModelRef, utcnow
from shared.topics import Channel, Topic

log = logging.getLogger(__name__)


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
        self.outcomes.update(other.outcomes)
        return self

    def refuse(self, escalation: Escalation, kind: str) -> None:
        self.refused += 1
        self.outcomes[(escalation.agent_id, escalation.pipeline, f"refused:{kind}")] += 1


AnyModel = CloudModel | CloudDetector
"""A classifier answers windows; a detector (YOLOv8 output layout) answers images."""


@dataclass(slots=True)
class _Pending:
    escalation: Escalation
    model: AnyModel
    input: npt.NDArray[np.float32] | ImageInput


class RefusedError(Exception):
    """Why an escalation is not run, and the kind of reason (for metrics)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


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

    def handle(self, batch: list[Inbound]) -> tuple[list[tuple[str, EscalationResult]], RunStats]:
        """Answer ``batch``: the (topic, result) pairs to publish, and what was done."""
        escalations, dead = _split(batch)
        stats = RunStats(messages=len(batch), dead_letters=len(dead))
        given = stored_results(self._engine, list({e.id for e in escalations}))
        fresh: dict[str, EscalationResult] = {}
        new: dict[str, Escalation] = {}
        pending: list[_Pending] = []
        resolved: dict[str, AnyModel | RefusedError] = {}  # pipeline -> its model, this batch
        for escalation in escalations:
            if escalation.id in given or escalation.id in new:
                stats.repeats += 1
                continue
            new[escalation.id] = escalation
            self._admit(escalation, pending, fresh, stats, resolved)
        self._run(pending, fresh, stats)
        rows = [escalation_row(e, fresh[e.id]) for e in new.values()]
        given.update(fresh)
        given.update(save(self._engine, rows, dead))
        out = [
            (str(Topic(e.agent_id, Channel.ESCALATION_RESULT)), given[e.id]) for e in escalations
        ]
        return out, stats

    def dead_letter(self, message: Inbound, reason: str) -> None:
        """Keep ``message`` as a dead letter with ``reason``."""
        row = dead_row(message, reason)
        row.pop("retained")
        save(self._engine, [], [row])

    def _admit(
        self,
        escalation: Escalation,
        pending: list[_Pending],
        fresh: dict[str, EscalationResult],
        stats: RunStats,
        resolved: dict[str, AnyModel | RefusedError],
    ) -> None:
        """Queue ``escalation`` for its cloud model, or refuse it now."""
        try:
            if not self._quota.take(escalation.agent_id):
                raise RefusedError(
                    "quota", f"over quota: agent {escalation.agent_id!r} escalates too often"
                )
            if escalation.pipeline not in resolved:
                try:
                    resolved[escalation.pipeline] = self._model_for(escalation.pipeline)
                except RefusedError as refusal:
                    resolved[escalation.pipeline] = refusal
            model = resolved[escalation.pipeline]
            if isinstance(model, RefusedError):
                raise model
            pending.append(_Pending(escalation, model, _input(escalation, model)))
        except RefusedError as refusal:
            fresh[escalation.id] = _refused(escalation, str(refusal))
            stats.refuse(escalation, refusal.kind)

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

    def _run(
        self, pending: list[_Pending], fresh: dict[str, EscalationResult], stats: RunStats
    ) -> None:
        """One session run per model per ``batch_max`` inputs."""
        by_model: dict[int, list[_Pending]] = {}
        for item in pending:
            by_model.setdefault(id(item.model), []).append(item)
        for items in by_model.values():
            for start in range(0, len(items), self._batch_max):
                chunk = items[start : start + self._batch_max]
                self._run_chunk(chunk, fresh, stats)

    def _run_chunk(
        self, chunk: list[_Pending], fresh: dict[str, EscalationResult], stats: RunStats
    ) -> None:
        model = chunk[0].model
        started = time.perf_counter()
        try:
            answers = _run_model(model, [item.input for item in chunk])
        except ModelError as exc:
            for item in chunk:
                fresh[item.escalation.id] = _refused(item.escalation, str(exc))
                stats.refuse(item.escalation, "model_error")
            return
        share_ms = (time.perf_counter() - started) * 1000.0 / len(chunk)
        stats.batch_sizes.append(len(chunk))
        stats.session_runs += 1
        stats.inputs_run += len(chunk)
        stats.largest_batch = max(stats.largest_batch, len(chunk))
        ref = ModelRef(name=model.name, version=model.version, sha256=model.sha256)
        now = utcnow()
        for item, answer in zip(chunk, answers, strict=True):
            escalation = item.escalation
            fresh[escalation.id] = _answered(escalation, ref, answer, share_ms, now)
            stats.answered += 1
            agree = "agree" if answer.label == escalation.label else "disagree"
            stats.outcomes[(escalation.agent_id, escalation.pipeline, agree)] += 1


def _split(batch: list[Inbound]) -> tuple[list[Escalation], list[dict[str, Any]]]:
    """The batch's escalations, and the dead-letter rows of what is not one."""
    escalations: list[Escalation] = []
    dead: list[dict[str, Any]] = []
    for message in batch:
        parsed = _parse(message)
        if isinstance(parsed, str):
            log.warning("dead-lettered an escalation on %s: %s", message.topic, parsed)
            row = dead_row(message, parsed)
            row.pop("retained")
            dead.append(row)
        else:
            escalations.append(parsed)
    return escalations, dead


def _parse(message: Inbound) -> Escalation | str:
    """The message as an escalation of its topic's agent, or why it is not one."""
    try:
        topic = Topic.parse(message.topic)
    except ContractError as exc:
        return str(exc)
    if topic.channel != Channel.ESCALATIONS:
        return f"the runner does not handle {topic.channel}"
    try:
        escalation = Escalation.model_validate_json(message.payload)
    except ValidationError as exc:
        return validation_reason(exc)
    if escalation.agent_id != topic.agent_id:
        return f"agent_id {escalation.agent_id!r} does not match topic {message.topic!r}"
    return escalation


def _run_model(model: AnyModel, inputs: list[npt.NDArray[np.float32] | ImageInput]) -> list[Answer]:
    """One batch through its model (each model gets the inputs its ``_input`` made)."""
    if isinstance(model, CloudDetector):
        return model.run([item for item in inputs if isinstance(item, ImageInput)])
    return model.run([item for item in inputs if not isinstance(item, ImageInput)])


def _input(escalation: Escalation, model: AnyModel) -> npt.NDArray[np.float32] | ImageInput:
    """The escalation's input as the model takes it; RefusedError when it does not decode or fit."""
    if isinstance(model, CloudDetector):
        try:
            return model.prepare(escalation)
        except ContractError as exc:
            raise RefusedError("bad_input", str(exc)) from None
    if escalation.kind != "window":
        raise RefusedError(
            "bad_input", f"cloud model {model.name} takes windows, not {escalation.kind}s"
        )
    try:
        array = decode_window(escalation.input_bytes())
    except ContractError as exc:
        raise RefusedError("bad_input", str(exc)) from None
    if escalation.window is not None and list(array.shape) != list(escalation.window.shape):
        raise RefusedError(
            "bad_input",
            f"the input is {list(array.shape)}; the escalation declares {escalation.window.shape}",
        )
    if (reason := model.fits(array)) is not None:
        raise RefusedError("bad_input", reason)
    return array


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
