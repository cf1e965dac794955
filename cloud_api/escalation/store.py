"""Escalations and their answers into SQL, in one transaction per batch with the batch's dead
letters, and the labels they give the samples behind them.

A sample and its escalation arrive in either order: when the sample is stored already, its
``edge`` and ``cloud`` labels are added here, after the answers are committed (so a sample
whose upload committed meanwhile is labelled too); when it comes later, ``sample_labels``
(called by ``cloud_api.samples``) gives it them from the stored escalation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloud_api.queries.samples import hold_labels
from cloud_api.tables import DEAD_LETTERS, EscalationRow, SampleLabelRow, SampleRow
from shared.escalations import Escalation, EscalationResult

log = logging.getLogger(__name__)


def model_text(name: str, version: str) -> str:
    """How a label names the model version behind it (as the samples' edge labels do)."""
    return f"{name} {version}"


def escalation_row(escalation: Escalation, result: EscalationResult) -> EscalationRow:
    """The row of one escalation and the answer it got."""
    cloud_model = (
        None if result.model is None else model_text(result.model.name, result.model.version)
    )
    agree = None if result.label is None else result.label == escalation.label
    return EscalationRow(
        id=escalation.id,
        agent_id=escalation.agent_id,
        pipeline=escalation.pipeline,
        event_id=escalation.event_id,
        sample_id=escalation.sample_id,
        edge_model=model_text(escalation.model.name, escalation.model.version),
        edge_label=escalation.label,
        edge_score=escalation.score,
        cloud_model=cloud_model,
        cloud_label=result.label,
        cloud_score=result.score,
        agree=agree,
        ts=escalation.ts,
        answered_at=result.ts,
        outcome=result.outcome,
        reason=result.reason,
        result=result.model_dump(mode="json", by_alias=True),
    )


def stored_results(engine: Engine, ids: Sequence[str]) -> dict[str, EscalationResult]:
    """The answers already given to any of ``ids``."""
    if not ids:
        return {}
    with Session(engine) as session:
        rows = session.execute(
            select(EscalationRow.id, EscalationRow.result).where(EscalationRow.id.in_(ids))
        )
        return {row[0]: EscalationResult.model_validate(row[1]) for row in rows}


def sample_labels(session: Session, sample_id: str, agent_id: str) -> list[SampleLabelRow]:
    """The cloud labels a sample arriving after its escalation gets from the stored answer
    (its edge label comes with the sample's own metadata)."""
    query = select(EscalationRow).where(
        EscalationRow.sample_id == sample_id,
        EscalationRow.agent_id == agent_id,
        EscalationRow.outcome == "answered",
    )
    return [_label(row, "cloud") for row in session.scalars(query)]


def _label(row: EscalationRow, source: str) -> SampleLabelRow:
    edge = source == "edge"
    return SampleLabelRow(
        sample_id=row.sample_id,
        label=row.edge_label if edge else row.cloud_label,
        source=source,
        author=row.agent_id if edge else "cloud",
        verdict=None,
        model=row.edge_model if edge else row.cloud_model,
        created_at=row.answered_at,
    )


def _labels_now(session: Session, row: EscalationRow) -> list[SampleLabelRow]:
    """Labels for the escalation's sample if it is stored (its own agent's only) and has
    not got them yet (the upload may have given them, if it saw this escalation)."""
    if row.sample_id is None or row.outcome != "answered":
        return []
    sample = session.get(SampleRow, row.sample_id)
    if sample is None or sample.agent_id != row.agent_id:
        return []
    sources = set(
        session.scalars(
            select(SampleLabelRow.source).where(
                SampleLabelRow.sample_id == row.sample_id,
                (SampleLabelRow.source == "edge")
                | (
                    (SampleLabelRow.source == "cloud")
                    & (SampleLabelRow.model == row.cloud_model)
                    & (SampleLabelRow.label == row.cloud_label)
                ),
            )
        )
    )
    return [_label(row, source) for source in ("cloud", "edge") if source not in sources]


def save(
    engine: Engine, rows: list[EscalationRow], dead: list[dict[str, Any]]
) -> dict[str, EscalationResult]:
    """Store the batch's answers and its dead letters in one transaction, then the labels
    they give the samples behind them.

    Returns the answers another runner stored first for any of these ids (a shared
    subscription can deliver a resend to two runners): those are what the agent must get.
    Errors other than such a race propagate (the caller retries a database that is down).
    """
    winners: dict[str, EscalationResult] = {}
    try:
        _commit(engine, rows, dead)
        stored = rows
    except IntegrityError:
        _commit(engine, [], dead)
        stored = []
        for row in rows:
            try:
                _commit(engine, [row], [])
                stored.append(row)
            except IntegrityError:
                winners.update(stored_results(engine, [row.id]))
    _label_samples(engine, stored)
    return winners


def _label_samples(engine: Engine, rows: list[EscalationRow]) -> None:
    """Label the samples already stored, after the answers are committed: a sample whose
    upload committed meanwhile (and so did not see the answer) gets its labels here."""
    behind = [row for row in rows if row.sample_id is not None and row.outcome == "answered"]
    if not behind:
        return
    with Session(engine) as session, session.begin():
        # An upload of one of these samples committing meanwhile waits, or is waited for.
        hold_labels(session, sample_ids=[row.sample_id for row in behind if row.sample_id])
        for row in behind:
            session.add_all(_labels_now(session, row))


def _commit(engine: Engine, rows: list[EscalationRow], dead: list[dict[str, Any]]) -> None:
    # Not expired on commit: the rows are read again to label their samples.
    with Session(engine, expire_on_commit=False) as session, session.begin():
        session.add_all(rows)
        session.flush()  # the primary key finds an id another runner stored first
        if dead:
            session.execute(insert(DEAD_LETTERS), dead)
