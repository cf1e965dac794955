"""The runner fed batches directly (no broker, no waits): the shipped models in ONNX Runtime,
SQLite and PostgreSQL. Batching is read from the runner's own counters, answers are compared
strictly, and faults (a model that fails on one input, a database that drops mid-batch) are
injected where they happen."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from cloud_api.db import create_db_engine, migrate
from cloud_api.escalation import runner as runner_module
from cloud_api.escalation.quota import Quota
from cloud_api.escalation.runner import Runner
from cloud_api.escalation.store import save
from cloud_api.tables import DEAD_LETTERS, EscalationRow
from edge_agent.sources.synthetic_scene import CLASSES
from shared.errors import ModelError
from shared.escalations import Escalation, EscalationResult
from shared.topics import Channel, Topic
from tests.cloud.escalation_helpers import (
    direct_runner,
    escalation,
    inbound,
    register_in_database,
    windows,
)
from tests.cloud.helpers import unique_agent_id
from tests.cloud.image_escalation_helpers import (
    CAMERA,
    DETECTOR,
    DETECTOR_VERSION,
    boxes,
    crops,
    frames,
    image_escalation,
)

POISON = 12345.0
"""A window starting with this value makes the injected model failure fire."""


@pytest.fixture
def engine(database_url: str, tmp_path: Path) -> Iterator[Engine]:
    """A migrated database with both shipped cloud models registered for their pipelines."""
    made = create_db_engine(database_url)
    migrate(made)
    register_in_database(made, tmp_path)
    register_in_database(
        made, tmp_path, pipeline=CAMERA, model=DETECTOR, version=DETECTOR_VERSION,
        task="detection", labels=list(CLASSES), normal_label=None,
    )  # fmt: skip
    yield made
    made.dispose()


def answers_of(runner: Runner, sent: list[Escalation]) -> tuple[list[EscalationResult], Any]:
    """The runner's answers to ``sent`` (one batch), in order, and its stats."""
    published, stats = runner.handle([inbound(one) for one in sent])
    topics = {topic for topic, _ in published}
    assert topics == {str(Topic(sent[0].agent_id, Channel.ESCALATION_RESULT))}
    got = {result.escalation_id: result for _, result in published}
    return [got[one.id] for one in sent], stats


def scores(results: list[EscalationResult]) -> list[float]:
    """Every result's score; a missing score fails the test (it never compares as 0)."""
    out = [r.score for r in results]
    assert all(score is not None for score in out), results
    return [score for score in out if score is not None]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_batch_is_one_session_run_and_answers_as_runs_of_one(
    engine: Engine, tmp_path: Path
) -> None:
    agent = unique_agent_id("esc")
    inputs = windows(24)
    alone, one_stats = answers_of(
        direct_runner(engine, tmp_path, batch_max=1), [escalation(agent, w) for w in inputs]
    )
    batched, stats = answers_of(
        direct_runner(engine, tmp_path, batch_max=32), [escalation(agent, w) for w in inputs]
    )
    assert (one_stats.session_runs, one_stats.batch_sizes) == (24, [1] * 24)
    assert (stats.session_runs, stats.batch_sizes) == (1, [24])
    assert all(r.outcome == "answered" for r in alone + batched)
    assert [r.label for r in alone] == [r.label for r in batched]
    assert np.allclose(scores(alone), scores(batched), atol=1e-5)
    # The shipped cloud model tells the simulated faults apart.
    assert {r.label for r in alone} >= {"healthy", "imbalance", "bearing_outer_race"}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_batch_of_images_is_one_session_run_and_answers_as_images_alone(
    engine: Engine, tmp_path: Path
) -> None:
    agent = unique_agent_id("cam")
    shots = crops(8) + frames(4)
    alone, one_stats = answers_of(
        direct_runner(engine, tmp_path, batch_max=1), [image_escalation(agent, s) for s in shots]
    )
    batched, stats = answers_of(
        direct_runner(engine, tmp_path, batch_max=32), [image_escalation(agent, s) for s in shots]
    )
    assert (one_stats.session_runs, stats.session_runs, stats.batch_sizes) == (12, 1, [12])
    assert all(r.outcome == "answered" for r in alone + batched)
    assert [r.label for r in alone] == [r.label for r in batched]
    assert np.allclose(scores(alone), scores(batched), atol=1e-4)
    for a, b in zip(alone, batched, strict=True):
        assert [d.label for d in a.detections] == [d.label for d in b.detections]
        assert np.allclose(boxes(a), boxes(b), atol=1e-2)


def test_a_model_error_refuses_only_its_input_and_is_not_replayed(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = runner_module._run_model

    def failing(model: Any, inputs: list[Any]) -> Any:
        if any(isinstance(x, np.ndarray) and x.flat[0] == POISON for x in inputs):
            raise ModelError("cloud model failed: injected")
        return real(model, inputs)

    monkeypatch.setattr(runner_module, "_run_model", failing)
    agent = unique_agent_id("esc")
    inputs = windows(5)
    poisoned = inputs[2].copy()
    poisoned.flat[0] = POISON
    sent = [escalation(agent, w) for w in [*inputs[:2], poisoned, *inputs[3:]]]
    runner = direct_runner(engine, tmp_path)
    got, stats = answers_of(runner, sent)
    assert [r.outcome for r in got] == ["answered"] * 2 + ["refused"] + ["answered"] * 2
    assert "injected" in got[2].reason
    assert stats.outcomes[(agent, sent[2].pipeline, "refused:model_error")] == 1
    with Session(engine) as session:
        stored = set(session.scalars(select(EscalationRow.id)))
    assert sent[2].id not in stored  # a model error may pass: never replayed
    assert {one.id for one in sent} - stored == {sent[2].id}
    monkeypatch.setattr(runner_module, "_run_model", real)  # the model works again
    again, stats = answers_of(runner, sent)
    assert again[2].outcome == "answered"
    assert [r for i, r in enumerate(again) if i != 2] == [r for i, r in enumerate(got) if i != 2]
    assert (stats.repeats, stats.inputs_run) == (4, 1)


def test_a_batch_retried_after_a_database_drop_spends_its_quota_once(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = save
    drops = [OperationalError("INSERT", {}, Exception("server closed the connection"))]

    def dropping(*args: Any, **kwargs: Any) -> Any:
        if drops:
            raise drops.pop()
        return real(*args, **kwargs)

    monkeypatch.setattr(runner_module, "save", dropping)
    agent = unique_agent_id("esc")
    runner = direct_runner(engine, tmp_path, quota=Quota(per_min=0.01, burst=3))
    sent = [escalation(agent, w) for w in windows(3)]
    with pytest.raises(OperationalError):
        runner.handle([inbound(one) for one in sent])
    got, _ = answers_of(runner, sent)  # the worker retries the same batch
    assert [r.outcome for r in got] == ["answered"] * 3, [r.reason for r in got]
    later, _ = answers_of(runner, [escalation(agent, windows(1)[0])])
    assert "over quota" in later[0].reason  # the burst of 3 was spent once


def test_an_escalation_naming_another_agent_is_dead_lettered_and_refused_once(
    engine: Engine, tmp_path: Path
) -> None:
    sender, named = unique_agent_id("esc"), unique_agent_id("other")
    one = escalation(named, windows(1)[0])
    runner = direct_runner(engine, tmp_path)
    answers = []
    for _ in range(2):  # sent, and sent again
        published, stats = runner.handle([inbound(one, agent_id=sender)])
        [(topic, result)] = published
        assert topic == str(Topic(sender, Channel.ESCALATION_RESULT))
        answers.append(result)
    first, again = answers
    assert (first.outcome, first.agent_id, first.escalation_id) == ("refused", sender, one.id)
    assert f"agent_id {named!r} does not match topic" in first.reason
    assert again == first  # the stored refusal, given again
    assert stats.repeats == 1
    with Session(engine) as session:
        row = session.get(EscalationRow, one.id)
        assert row is not None
        assert (row.agent_id, row.outcome) == (sender, "refused")
        dead = session.scalar(select(func.count()).select_from(DEAD_LETTERS))
        assert dead == 2


def test_a_message_the_runner_fails_on_is_dead_lettered_and_refused(
    engine: Engine, tmp_path: Path
) -> None:
    agent = unique_agent_id("esc")
    one = escalation(agent, windows(1)[0])
    runner = direct_runner(engine, tmp_path)
    published, stats = runner.dead_letter(inbound(one), "the runner failed on it: boom")
    [(topic, result)] = published
    assert topic == str(Topic(agent, Channel.ESCALATION_RESULT))
    assert (result.outcome, result.reason) == ("refused", "the runner failed on it: boom")
    assert (stats.dead_letters, stats.refused) == (1, 1)
    resent, stats = runner.handle([inbound(one)])
    assert resent == published  # stored: the resend gets the same answer
    assert stats.repeats == 1
    garbage = inbound(one)._replace(payload=b"{}")
    assert runner.dead_letter(garbage, "the runner failed on it: boom")[0] == []
