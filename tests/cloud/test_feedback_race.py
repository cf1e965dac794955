"""A person's verdict on an event and a sample of that event, stored at the same time, on
SQLite and PostgreSQL: the sample carries the verdict whichever commits first, and when both
are in flight together (the sample paused between reading the event's verdicts and its
commit; and many uploads racing one verdict). The same for the cloud's answer to an
escalation and the escalated sample."""

from __future__ import annotations

import functools
import io
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

import cloud_api.samples as samples_module
from cloud_api.callers import Principal
from cloud_api.db import create_db_engine, create_sessionmaker, migrate
from cloud_api.escalation.store import escalation_row, save
from cloud_api.escalation.store import sample_labels as escalation_labels
from cloud_api.queries.samples import feedback_of
from cloud_api.registry import FileArtifactStore
from cloud_api.routes.feedback import give_feedback
from cloud_api.sample_schemas import FeedbackIn
from cloud_api.samples import Stored, store_sample
from cloud_api.tables import EventRow, SampleLabelRow
from shared.escalations import EscalationResult
from shared.messages import new_event_id, utcnow
from shared.samples import SampleMeta
from tests.cloud.escalation_helpers import escalation
from tests.cloud.helpers import MODEL, unique_agent_id
from tests.cloud.sample_helpers import window_sample

pytestmark = pytest.mark.integration

ALICE = Principal(kind="key", name="alice", scope="operate")
PAUSE_S = 1.0
"""How long a paused sample waits for a verdict that may be blocked behind it (never
asserted: it only gives the verdict every chance to run while the sample is in flight)."""


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = create_db_engine(database_url)
    migrate(engine)
    yield create_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def store(tmp_path: Path) -> FileArtifactStore:
    return FileArtifactStore(tmp_path / "artifacts")


def stored_event(sessions: sessionmaker[Session], agent_id: str) -> str:
    """An alarm of ``agent_id``, stored as ingest stores it."""
    event_id, now = new_event_id(), utcnow()
    with sessions() as session:
        session.add(EventRow(
            id=event_id, agent_id=agent_id, pipeline="spindle-vibration", kind="anomaly",
            state="start", label="bearing_outer_race", score=0.97, ts=now, seq=1,
            model_name=MODEL.name, model_version=MODEL.version, model_sha256=MODEL.sha256,
            attributes={}, received_at=now,
        ))  # fmt: skip
        session.commit()
    return event_id


def event_samples(agent_id: str, event_id: str, count: int) -> list[tuple[SampleMeta, bytes]]:
    return [
        window_sample(agent_id, seed=n, reason="event", event_id=event_id) for n in range(count)
    ]


def upload(
    sessions: sessionmaker[Session], store: FileArtifactStore, tmp: Path, sample: Any
) -> Stored:
    meta, blob = sample
    with sessions() as session:
        return store_sample(
            session, store=store, meta=meta, source=io.BytesIO(blob), tmp_dir=tmp,
            max_bytes=1 << 20,
        )  # fmt: skip


def judge(sessions: sessionmaker[Session], event_id: str) -> int:
    """Alice calls the event a false alarm, through the route; the samples it labelled."""
    with sessions() as session:
        verdict = give_feedback(event_id, FeedbackIn(verdict="false_alarm"), session, ALICE)
    return verdict.samples_labelled


def person_labelled(sessions: sessionmaker[Session], sample_ids: Sequence[str]) -> set[str]:
    with sessions() as session:
        query = select(SampleLabelRow.sample_id).where(
            SampleLabelRow.sample_id.in_(sample_ids), SampleLabelRow.source == "person"
        )
        return set(session.scalars(query))


def while_in_flight(
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    read_labels: Callable[..., Any],
    sessions: sessionmaker[Session],
    store: FileArtifactStore,
    tmp: Path,
    sample: Any,
    racing: Callable[[], object],
) -> None:
    """Upload ``sample``, paused after it read its labels with ``read_labels`` (the name
    ``name`` in the samples module) and before it commits; run ``racing`` meanwhile. Either
    ``racing`` waits for the sample's turn, or the sample sees what ``racing`` stored."""
    read, resume = threading.Event(), threading.Event()

    def read_then_pause(*args: Any) -> Any:
        found = read_labels(*args)
        read.set()
        resume.wait(timeout=30)
        return found

    monkeypatch.setattr(samples_module, name, read_then_pause)
    uploading = threading.Thread(target=upload, args=(sessions, store, tmp, sample))
    uploading.start()
    assert read.wait(timeout=30)
    other = threading.Thread(target=racing)
    other.start()
    other.join(timeout=PAUSE_S)  # done already, or waiting for the sample's turn
    resume.set()
    uploading.join()
    other.join()


def test_the_sample_gets_the_verdict_in_either_order(
    sessions: sessionmaker[Session], store: FileArtifactStore, tmp_path: Path
) -> None:
    agent_id = unique_agent_id("press")
    first_event, second_event = stored_event(sessions, agent_id), stored_event(sessions, agent_id)
    (before,) = event_samples(agent_id, first_event, 1)
    (after,) = event_samples(agent_id, second_event, 1)

    upload(sessions, store, tmp_path, before)
    assert judge(sessions, first_event) == 1
    assert judge(sessions, second_event) == 0
    upload(sessions, store, tmp_path, after)

    assert person_labelled(sessions, [before[0].id, after[0].id]) == {before[0].id, after[0].id}


def test_a_verdict_given_while_a_sample_is_in_flight_labels_it(
    sessions: sessionmaker[Session],
    store: FileArtifactStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sample has read the event's verdicts (none yet) and not committed; the verdict
    comes now. Either the verdict waits for the sample and labels it, or the sample sees it."""
    agent_id = unique_agent_id("press")
    event_id = stored_event(sessions, agent_id)
    (sample,) = event_samples(agent_id, event_id, 1)
    racing = functools.partial(judge, sessions, event_id)
    while_in_flight(
        monkeypatch, "feedback_of", feedback_of, sessions, store, tmp_path, sample, racing
    )

    assert person_labelled(sessions, [sample[0].id]) == {sample[0].id}


def test_uploads_racing_a_verdict_all_get_it(
    sessions: sessionmaker[Session], store: FileArtifactStore, tmp_path: Path
) -> None:
    agent_id = unique_agent_id("press")
    event_id = stored_event(sessions, agent_id)
    racing = event_samples(agent_id, event_id, 6)
    start = threading.Barrier(len(racing) + 1)
    failures: list[BaseException] = []

    def run(work: Callable[[], object]) -> None:
        start.wait()
        try:
            work()
        except BaseException as exc:  # reported below: a thread's error must fail the test
            failures.append(exc)

    jobs: list[Callable[[], object]] = [
        functools.partial(upload, sessions, store, tmp_path, sample) for sample in racing
    ]
    jobs.append(functools.partial(judge, sessions, event_id))
    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    ids = [meta.id for meta, _ in racing]
    assert person_labelled(sessions, ids) == set(ids)


def test_an_answer_stored_while_its_sample_is_in_flight_labels_it(
    sessions: sessionmaker[Session],
    store: FileArtifactStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sample has read its escalation's answers (none yet) and not committed; the cloud's
    answer is stored now. Either the answer's labelling waits for the sample, or the sample
    sees the answer: the sample gets the cloud's label either way."""
    agent_id = unique_agent_id("press")
    meta, blob = window_sample(agent_id, reason="escalated")
    asked = escalation(agent_id, np.zeros(256, np.float32), sample_id=meta.id)
    answer = EscalationResult(
        escalation_id=asked.id, agent_id=agent_id, pipeline=asked.pipeline, ts=utcnow(),
        outcome="answered", model=MODEL.model_copy(update={"name": "cloud-model"}),
        label="bearing_outer_race", score=0.9,
    )  # fmt: skip
    engine = sessions.kw["bind"]
    racing = functools.partial(save, engine, [escalation_row(asked, answer)], [])
    while_in_flight(
        monkeypatch, "escalation_labels", escalation_labels, sessions, store, tmp_path,
        (meta, blob), racing,
    )  # fmt: skip

    with sessions() as session:
        query = select(SampleLabelRow.label).where(
            SampleLabelRow.sample_id == meta.id, SampleLabelRow.source == "cloud"
        )
        assert list(session.scalars(query)) == ["bearing_outer_race"]
