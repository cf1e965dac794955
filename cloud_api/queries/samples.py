"""Stored samples and their labels: keyset pages with filters, labels with provenance, event
feedback, the review list of edge/cloud disagreements, and what retention removes."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, Select, delete, exists, func, select, text, tuple_
from sqlalchemy.orm import Session, aliased

from cloud_api.db import AdvisoryLock
from cloud_api.tables import EventFeedbackRow, EventRow, SampleLabelRow, SampleRow

PERSON = "person"
"""The ``source`` of a label a person gave (its ``author`` is the API key's name)."""


def get_sample(session: Session, sample_id: str) -> SampleRow | None:
    """One sample, or None."""
    return session.get(SampleRow, sample_id)


def get_event(session: Session, event_id: str) -> EventRow | None:
    """One stored event, or None."""
    return session.get(EventRow, event_id)


def samples_page_query(
    *,
    agent_id: str | None = None,
    pipeline: str | None = None,
    reason: str | None = None,
    label: str | None = None,
    source: str | None = None,
    event_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after: tuple[datetime, str] | None = None,
    limit: int,
) -> Select[SampleRow]:
    """Samples newest first on (ts, id); ``label``/``source`` match any of a sample's labels
    (both given: one label with both). ``since`` inclusive, ``until`` exclusive."""
    wanted = (
        (SampleRow.agent_id, agent_id),
        (SampleRow.pipeline, pipeline),
        (SampleRow.reason, reason),
        (SampleRow.event_id, event_id),
    )
    query = select(SampleRow).where(*[col == value for col, value in wanted if value is not None])
    if label is not None or source is not None:
        match = [SampleLabelRow.sample_id == SampleRow.id]
        if label is not None:
            match.append(SampleLabelRow.label == label)
        if source is not None:
            match.append(SampleLabelRow.source == source)
        query = query.where(exists().where(*match))
    if since is not None:
        query = query.where(SampleRow.ts >= since)
    if until is not None:
        query = query.where(SampleRow.ts < until)
    if after is not None:
        query = query.where(tuple_(SampleRow.ts, SampleRow.id) < tuple_(*after))
    return query.order_by(SampleRow.ts.desc(), SampleRow.id.desc()).limit(limit)


def labels_of(session: Session, sample_ids: Sequence[str]) -> dict[str, list[SampleLabelRow]]:
    """Each sample's labels, oldest first."""
    found: dict[str, list[SampleLabelRow]] = defaultdict(list)
    if sample_ids:
        rows = session.scalars(
            select(SampleLabelRow)
            .where(SampleLabelRow.sample_id.in_(sample_ids))
            .order_by(SampleLabelRow.id)
        )
        for row in rows:
            found[row.sample_id].append(row)
    return found


def hold_labels(
    session: Session, *, sample_ids: Sequence[str] = (), event_id: str | None = None
) -> None:
    """Make this transaction and any other that labels these samples (or ``event_id``'s
    samples) take turns, until it ends; call it before the transaction reads or writes.

    A verdict labels the samples stored before it, and a sample takes the verdicts stored
    before it; the cloud's answer to an escalation labels its sample if stored, and a sample
    takes the answers stored before it. Without turns, each could read before the other
    committed and neither would label the sample. With them, the later one sees the earlier
    one's commit (each statement reads what is committed when it starts). PostgreSQL:
    transaction-level advisory locks, samples (in order) before the event, so no two
    transactions wait for each other. SQLite: its write lock, taken now (``BEGIN
    IMMEDIATE``; pysqlite would otherwise begin only at the first write, after the read).
    """
    if session.get_bind().dialect.name != "postgresql":
        session.execute(text("BEGIN IMMEDIATE"))
        return
    keys = [(AdvisoryLock.SAMPLE_LABELS, _key(sample_id)) for sample_id in sorted(sample_ids)]
    if event_id is not None:
        keys.append((AdvisoryLock.EVENT_LABELS, _key(event_id)))
    for space, key in keys:
        session.execute(select(func.pg_advisory_xact_lock(space, key)))


def _key(text_id: str) -> int:
    """An id as an int4 lock key."""
    return int.from_bytes(hashlib.blake2b(text_id.encode(), digest_size=4).digest(), "big") - 2**31


def feedback_of(session: Session, event_id: str, agent_id: str) -> Sequence[EventFeedbackRow]:
    """People's verdicts on ``agent_id``'s event, oldest first (none when the event is
    another agent's: a sample cannot borrow a verdict by naming it). Hold the event's labels
    first (``hold_labels``) when a new sample is to take them."""
    own = select(EventRow.id).where(EventRow.id == event_id, EventRow.agent_id == agent_id)
    query = select(EventFeedbackRow).where(EventFeedbackRow.event_id.in_(own))
    return session.scalars(query.order_by(EventFeedbackRow.id)).all()


def add_feedback(session: Session, feedback: EventFeedbackRow, agent_id: str) -> int:
    """Record a verdict (not committed) and label the event's stored samples with it (those
    of the event's own agent: another agent cannot borrow a verdict by naming the event); the
    number of samples labelled. It holds the event's labels until the commit: a sample
    stored at the same time gets the verdict either way (``hold_labels``)."""
    hold_labels(session, event_id=feedback.event_id)
    session.add(feedback)
    ids = session.scalars(
        select(SampleRow.id).where(
            SampleRow.event_id == feedback.event_id, SampleRow.agent_id == agent_id
        )
    )
    count = 0
    for sample_id in ids.all():
        session.add(person_label(sample_id, feedback))
        count += 1
    return count


def person_label(sample_id: str, feedback: EventFeedbackRow) -> SampleLabelRow:
    """The label a person's verdict gives one sample of the event."""
    return SampleLabelRow(
        sample_id=sample_id,
        label=feedback.label,
        source=PERSON,
        author=feedback.author,
        verdict=feedback.verdict,
        model=None,
        created_at=feedback.created_at,
    )


def disagreements_query(
    *,
    agent_id: str | None = None,
    pipeline: str | None = None,
    after: tuple[datetime, str] | None = None,
    limit: int,
) -> Select[SampleRow]:
    """Samples with an edge label and a cloud label that differ, each once, newest first on
    (ts, id) and after ``after`` (keyset pages)."""
    edge, cloud = aliased(SampleLabelRow), aliased(SampleLabelRow)
    differ = (
        exists()
        .where(edge.sample_id == SampleRow.id, edge.source == "edge")
        .where(cloud.sample_id == SampleRow.id, cloud.source == "cloud")
        .where(edge.label != cloud.label)
    )
    query = select(SampleRow).where(differ)
    if agent_id is not None:
        query = query.where(SampleRow.agent_id == agent_id)
    if pipeline is not None:
        query = query.where(SampleRow.pipeline == pipeline)
    if after is not None:
        query = query.where(tuple_(SampleRow.ts, SampleRow.id) < tuple_(*after))
    return query.order_by(SampleRow.ts.desc(), SampleRow.id.desc()).limit(limit)


def disagreement(labels: Sequence[SampleLabelRow]) -> tuple[str, str] | None:
    """The (edge, cloud) labels on which a sample's answers differ, the newest cloud answer
    first (labels oldest first, as ``labels_of`` gives them); None if they all agree."""
    edges = [row.label for row in labels if row.source == "edge"]
    clouds = [row.label for row in labels if row.source == "cloud"]
    for cloud in reversed(clouds):
        for edge in edges:
            if edge != cloud:
                return edge, cloud
    return None


def oldest_samples(conn: Connection, *, horizon: datetime, limit: int) -> Sequence[tuple[str, str]]:
    """Up to ``limit`` of the oldest (id, agent id) of samples older than ``horizon``."""
    query = (
        select(SampleRow.id, SampleRow.agent_id)
        .where(SampleRow.ts < horizon)
        .order_by(SampleRow.ts)
        .limit(limit)
    )
    return [(row[0], row[1]) for row in conn.execute(query)]


def delete_samples(conn: Connection, sample_ids: Sequence[str]) -> int:
    """Delete these samples and their labels; the number of samples deleted."""
    conn.execute(delete(SampleLabelRow).where(SampleLabelRow.sample_id.in_(sample_ids)))
    return int(conn.execute(delete(SampleRow).where(SampleRow.id.in_(sample_ids))).rowcount)
