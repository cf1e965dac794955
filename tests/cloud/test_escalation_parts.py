"""The runner's parts on their own: the per-agent token bucket (a fake clock), the shipped
cloud model in a real ONNX Runtime session, the store's answer when another runner stored an
id first (SQLite and PostgreSQL), the worker through a PostgreSQL outage and through a
database drop while it isolates a bad message, and the subscriptions it refuses."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from cloud_api.db import create_db_engine, migrate
from cloud_api.escalation import runner as runner_module
from cloud_api.escalation.inputs import AnyModel, ModelInput, model_input
from cloud_api.escalation.model import CloudModel, decode_window
from cloud_api.escalation.quota import Quota
from cloud_api.escalation.store import escalation_row, save
from cloud_api.escalation.worker import GIVE_UP_AFTER, EscalationWorker
from cloud_api.registry import FileArtifactStore
from cloud_api.tables import DEAD_LETTERS, EscalationRow, SampleLabelRow
from edge_agent.sources.machine_physics import LABELS
from shared.errors import ConfigError, ContractError
from shared.escalations import Escalation, EscalationResult
from shared.messages import ModelRef, encode, utcnow
from shared.topics import Channel
from tests.cloud.escalation_helpers import (
    CLOUD_MODEL,
    CLOUD_VERSION,
    MODELS,
    Results,
    escalation,
    register_in_database,
    windows,
)
from tests.cloud.helpers import Publisher, topic, unique_agent_id, wait_until
from tests.services import Mosquitto, PostgresCluster


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_quota_allows_a_burst_then_its_rate_per_agent() -> None:
    clock = Clock()
    quota = Quota(per_min=60, burst=3, clock=clock)
    ids = iter(range(1000))

    def take(agent: str) -> bool:
        return quota.take(agent, f"e{next(ids)}")

    assert [take("a") for _ in range(4)] == [True, True, True, False]
    assert take("b")  # every agent has its own bucket
    clock.now = 0.5
    assert not take("a")  # half a token back
    clock.now = 1.0
    assert take("a")
    assert not take("a")
    clock.now = 1000.0
    assert [take("a") for _ in range(4)] == [True, True, True, False]  # capped at burst


def test_an_escalation_spends_the_quota_once_however_often_it_is_asked() -> None:
    quota = Quota(per_min=0.01, burst=2, clock=Clock())
    assert [quota.take("a", "e1") for _ in range(5)] == [True] * 5  # one token spent
    assert quota.take("a", "e2")
    assert not quota.take("a", "e3")
    assert not quota.take("a", "e3")  # refused alike, nothing spent
    assert quota.take("b", "e3")  # another agent's id is another escalation


@pytest.mark.parametrize(("per_min", "burst"), [(0, 1), (-1, 5), (10, 0)])
def test_a_quota_that_allows_nothing_is_refused(per_min: float, burst: int) -> None:
    with pytest.raises(ValueError, match=r"per_min > 0 and burst >= 1"):
        Quota(per_min=per_min, burst=burst)


@pytest.fixture(scope="module")
def cloud_model() -> CloudModel:
    data = (MODELS / f"{CLOUD_MODEL}-{CLOUD_VERSION}.onnx").read_bytes()
    return CloudModel(
        data, name=CLOUD_MODEL, version=CLOUD_VERSION, sha256="0" * 64, labels=list(LABELS),
        normal_label=LABELS[0], threads=1,
    )  # fmt: skip


def test_one_session_run_answers_a_batch_as_runs_of_one_do(cloud_model: CloudModel) -> None:
    inputs = [w.astype(np.float32) for w in windows(12, seed=5)]
    batched = cloud_model.run(inputs)
    alone = [cloud_model.run([one])[0] for one in inputs]
    assert [a.label for a in batched] == [a.label for a in alone]
    assert np.allclose([a.score for a in batched], [a.score for a in alone], atol=1e-6)
    assert cloud_model.provider == "cpu"
    # The healthy label scores below one half; a fault is named with 1 - p(healthy).
    for answer in batched:
        assert (answer.label == "healthy") == (answer.score < 0.5)


def test_an_input_of_another_shape_is_refused_with_both_shapes(cloud_model: CloudModel) -> None:
    assert cloud_model.fits(np.zeros(2048, np.float32)) is None
    reason = cloud_model.fits(np.zeros((2, 1024), np.float32))
    assert reason == "input of shape [2, 1024] does not fit the cloud model's input [2048]"


def npy_claiming(shape: tuple[int, ...], descr: str = "<f8") -> bytes:
    """A ``.npy`` header claiming ``shape`` of ``descr``, followed by 64 bytes only."""
    out = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(out, header)
    return out.getvalue() + b"\x00" * 64


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (npy_claiming((10**9,)), "the .npy header claims 8000000000 bytes of data; the input"),
        (npy_claiming((8,), "|O"), "not a numeric .npy array"),
        (b"not a numpy file", "not a .npy array"),
    ],
)
def test_a_window_is_refused_from_its_npy_header_before_it_is_read(
    data: bytes, reason: str
) -> None:
    with pytest.raises(ContractError, match=re.escape(reason)):
        decode_window(data)


def test_an_id_another_runner_stored_first_is_answered_with_its_answer(
    database_url: str, tmp_path: Path
) -> None:
    engine = create_db_engine(database_url)
    migrate(engine)
    agent = "store-test"
    first, second = (escalation(agent, w) for w in windows(2))
    ref = ModelRef(name=CLOUD_MODEL, version=CLOUD_VERSION, sha256="0" * 64)

    def answer(label: str, escalation_id: str) -> EscalationResult:
        return EscalationResult(
            escalation_id=escalation_id, agent_id=agent, pipeline=first.pipeline, ts=utcnow(),
            outcome="answered", model=ref, label=label, score=0.9,
        )  # fmt: skip

    winner = answer("imbalance", first.id)
    assert save(engine, [escalation_row(first, winner)], []) == {}
    late = [
        escalation_row(first, answer("impact", first.id)),
        escalation_row(second, answer("impact", second.id)),
    ]
    assert save(engine, late, []) == {first.id: winner}
    with Session(engine) as session:
        stored = {row.id: row.cloud_label for row in session.query(EscalationRow)}
        assert stored == {first.id: "imbalance", second.id: "impact"}
        assert session.query(SampleLabelRow).count() == 0  # no sample behind them
    engine.dispose()


@pytest.mark.postgres
def test_escalations_sent_while_the_database_is_down_are_answered_when_it_is_back(
    broker: Mosquitto, tmp_path: Path
) -> None:
    cluster = PostgresCluster()
    cluster.start()
    engine = create_db_engine(cluster.create_database())
    runner = None
    agent = unique_agent_id("esc-outage")
    results = Results(broker.port, agent)
    publisher = Publisher("127.0.0.1", broker.port).connect()
    try:
        migrate(engine)
        artifacts = FileArtifactStore(tmp_path / "artifacts")
        register_in_database(engine, tmp_path)
        runner = EscalationWorker(
            engine=engine, artifacts=artifacts, mqtt_url=broker.url,
            client_id=f"runner-{agent}", session_expiry_s=60,
        )  # fmt: skip
        runner.start()
        runner.wait_connected()
        cluster.halt()
        sent = [escalation(agent, w) for w in windows(3)]
        for one in sent:
            publisher.publish(topic(agent, Channel.ESCALATIONS), encode(one))
        cluster.resume()
        got = {r.escalation_id: r for r in results.wait(3)}
        assert [got[one.id].outcome for one in sent] == ["answered"] * 3
        with Session(engine) as session:
            assert session.query(EscalationRow).count() == 3
    finally:
        if runner is not None:
            runner.stop()
        results.close()
        publisher.close()
        engine.dispose()
        cluster.stop()


def test_the_runner_thread_survives_a_database_drop_while_it_isolates_a_bad_message(
    broker: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'cloud.db'}")
    migrate(engine)
    register_in_database(engine, tmp_path)
    agent = unique_agent_id("esc-guard")
    bad, *good = (escalation(agent, w) for w in windows(4))
    real_input, real_save = model_input, save

    def buggy(one: Escalation, model: AnyModel) -> ModelInput:
        if one.id == bad.id:
            raise RuntimeError("a bug this input finds")
        return real_input(one, model)

    drops = [OperationalError("INSERT", {}, Exception("server closed the connection"))]

    def dropping(*args: Any) -> dict[str, EscalationResult]:
        if drops and any("failed on it" in row["reason"] for row in args[2]):
            raise drops.pop()  # the database drops as the bad message is dead-lettered
        return real_save(*args)

    monkeypatch.setattr(runner_module, "model_input", buggy)
    monkeypatch.setattr(runner_module, "save", dropping)
    results = Results(broker.port, agent)
    publisher = Publisher("127.0.0.1", broker.port).connect()
    worker = EscalationWorker(
        engine=engine, artifacts=FileArtifactStore(tmp_path / "artifacts"), mqtt_url=broker.url,
        client_id=f"runner-{agent}", session_expiry_s=60,
    )  # fmt: skip
    try:
        worker.start()
        worker.wait_connected()
        for one in (*good[:1], bad, *good[1:]):
            publisher.publish(topic(agent, Channel.ESCALATIONS), encode(one))
        got = {r.escalation_id: r for r in results.wait(4)}
        assert [got[one.id].outcome for one in good] == ["answered"] * 3
        assert got[bad.id].outcome == "refused"
        assert "the runner failed on it: a bug this input finds" in got[bad.id].reason
        worker.wait_idle()
        assert worker.alive
        assert worker.totals.loop_failures == 1
        with Session(engine) as session:
            assert session.scalar(select(func.count()).select_from(DEAD_LETTERS)) == 1
            refusal = session.get(EscalationRow, bad.id)
            assert refusal is not None
            assert refusal.outcome == "refused"
    finally:
        worker.stop()
        results.close()
        publisher.close()
        engine.dispose()


@pytest.mark.parametrize(
    ("protocol", "share_group", "reason"),
    [
        ("3.1.1", "runners", "share group 'runners' needs MQTT 5"),
        ("4", None, "MQTT protocol must be '5' or '3.1.1'"),
        ("5", "bad/group", "share group 'bad/group' must be letters"),
    ],
)
def test_a_subscription_that_would_receive_nothing_is_refused_at_start(
    tmp_path: Path, protocol: str, share_group: str | None, reason: str
) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'cloud.db'}")
    with pytest.raises(ConfigError, match=reason):
        EscalationWorker(
            engine=engine, artifacts=FileArtifactStore(tmp_path / "artifacts"),
            mqtt_url="mqtt://127.0.0.1:1883", client_id="runner", protocol=protocol,
            share_group=share_group,
        )  # fmt: skip
    engine.dispose()


def test_a_batch_that_always_fails_is_given_up_and_does_not_hold_the_ones_behind_it(
    broker: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even dead-lettering the bad input fails, every time, with the database up: after a few
    tries the runner leaves that batch to the agent's resend and answers what comes next."""
    engine = create_db_engine(f"sqlite:///{tmp_path / 'cloud.db'}")
    migrate(engine)
    register_in_database(engine, tmp_path)
    agent = unique_agent_id("esc-poison")
    bad, *good = (escalation(agent, w) for w in windows(3))
    real_input, real_save = model_input, save

    def buggy(one: Escalation, model: AnyModel) -> ModelInput:
        if one.id == bad.id:
            raise RuntimeError("a bug this input finds")
        return real_input(one, model)

    def unstorable(*args: Any) -> dict[str, EscalationResult]:
        if any("failed on it" in row["reason"] for row in args[2]):
            raise ValueError("a dead letter this database refuses")
        return real_save(*args)

    monkeypatch.setattr(runner_module, "model_input", buggy)
    monkeypatch.setattr(runner_module, "save", unstorable)
    results = Results(broker.port, agent)
    publisher = Publisher("127.0.0.1", broker.port).connect()
    worker = EscalationWorker(
        engine=engine, artifacts=FileArtifactStore(tmp_path / "artifacts"), mqtt_url=broker.url,
        client_id=f"runner-{agent}", session_expiry_s=60,
    )  # fmt: skip
    try:
        worker.start()
        worker.wait_connected()
        publisher.publish(topic(agent, Channel.ESCALATIONS), encode(bad))
        wait_until(lambda: worker.totals.loop_failures >= 1, what="the bad batch failing")
        for one in good:  # behind the bad batch, not in it
            publisher.publish(topic(agent, Channel.ESCALATIONS), encode(one))
        got = {r.escalation_id: r for r in results.wait(2)}
        assert {one.id for one in good} <= set(got)
        assert [got[one.id].outcome for one in good] == ["answered"] * 2
        assert bad.id not in got  # left to the agent's resend
        assert worker.alive
        assert worker.totals.loop_failures >= GIVE_UP_AFTER
    finally:
        worker.stop()
        results.close()
        publisher.close()
        engine.dispose()
