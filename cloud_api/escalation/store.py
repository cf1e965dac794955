"""Escalations and their answers into SQL, in one transaction per batch, with the labels they
give the sample behind them and the dead letters of the batch.

A sample and its escalation arrive in either order: when the sample is stored already, its
``edge`` and ``cloud`` labels are added here; when it comes later, ``sample_labels`` (called
by ``cloud_api.samples``) gives it them from the stored escalation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

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
    """Labels for the escalation's sample if it is stored already (its own agent's only)."""
    if row.sample_id is None or row.outcome != "answered":
        return []
    sample = session.get(SampleRow, row.sample_id)
    if sample is None or sample.agent_id != row.agent_id:
        return []
    has_edge = session.scalar(
        select(SampleLabelRow.id)
        .where(SampleLabelRow.sample_id == row.sample_id, SampleLabelRow.source == "edge")
        .limit(1)
    )
    labels = [_label(row, "cloud")]
    if has_edge is None:
        labels.append(_label(row, "edge"))
    return labels


def save(
    engine: Engine, rows: list[EscalationRow], dead: list[dict[str, Any]]
) -> dict[str, EscalationResult]:
    """Store the batch's answers, their labels and its dead letters in one transaction.

    Returns the answers another runner stored first for any of these ids (a shared
    subscription can deliver a resend to two runners): those are what the agent must get.
    Errors other than such a race propagate (the caller retries a database that is down).
    """
    try:
        _commit(engine, rows, dead)
        return {}
    except IntegrityError:
        pass
    winners: dict[str, EscalationResult] = {}
    _commit(engine, [], dead)
    for row in rows:
        try:
            _commit(engine, [row], [])
        except IntegrityError:
            won = stored_results(engine, [row.id])
            winners.update(won)
    return winners


def _commit(engine: Engine, rows: list[EscalationRow], dead: list[dict[str, Any]]) -> None:
    with Session(engine) as session, session.begin():
        session.add_all(rows)
        session.flush()  # the primary key finds an id another runner stored first
        for row in rows:
            session.add_all(_labels_now(session, row))
        if dead:
            session.execute(insert(DEAD_LETTERS), dead)
