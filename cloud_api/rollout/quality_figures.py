"""A canary's model-quality figures from SQL: the summaries and events its agents sent.

``DeploymentQuality`` is what ``machine.advance`` asks (``quality.QualityCheck``) when a
canary has been healthy long enough: the canary agents' windows on the new version against a
baseline over the same period, the deployment's other agents still on the old version, or,
when every agent is in the canary, the canary agents over as long a period just before the
deployment was created.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloud_api.rollout.quality import QualityFigures
from cloud_api.tables import EscalationRow, EventRow, SummaryRow

ALARM_STATES = ("start", "instant")
"""An incident's first event: what an alarm is, once per incident."""
INCIDENT_STATES = ("start", "end", "instant")


class DeploymentQuality:
    """The figures of one deployment's canary and baseline (a ``quality.QualityCheck``)."""

    def __init__(
        self,
        session: Session,
        *,
        pipeline: str,
        model: str,
        version: str,
        created_at: datetime,
        canary: Sequence[str],
        rest: Sequence[str],
    ) -> None:
        self._session = session
        self._pipeline = pipeline
        self._model = model
        self._version = version
        self._created_at = created_at
        self._canary = list(canary)
        self._rest = list(rest)

    def figures(self, since: datetime, until: datetime) -> tuple[QualityFigures, QualityFigures]:
        """(canary on the new version, baseline on the old one) over ``[since, until)``."""
        canary = self._group(self._canary, since, until, on_version=True)
        if self._rest:
            return canary, self._group(self._rest, since, until, on_version=False)
        before = self._created_at - (until - since)
        return canary, self._group(self._canary, before, self._created_at, on_version=None)

    def _group(
        self,
        agent_ids: list[str],
        since: datetime,
        until: datetime,
        *,
        on_version: bool | None,
    ) -> QualityFigures:
        """The group's figures; ``on_version``: only windows and events of the deployment's
        version (True), of any other (False), or of any (None)."""
        summaries = select(SummaryRow.inferences, SummaryRow.signals).where(
            SummaryRow.agent_id.in_(agent_ids),
            SummaryRow.pipeline == self._pipeline,
            SummaryRow.window_start >= since,
            SummaryRow.window_start < until,
        )
        if on_version is not None:
            same = SummaryRow.model_version == self._version
            summaries = summaries.where(same if on_version else ~same)
        windows, score_sum, score_count = 0, 0.0, 0
        for inferences, signals in self._session.execute(summaries):
            windows += inferences
            score: dict[str, Any] | None = (signals or {}).get("score")
            if score is not None:
                score_sum += float(score["mean"]) * int(score["count"])
                score_count += int(score["count"])
        alarms, alarm_s = self._alarms(agent_ids, since, until, on_version=on_version)
        period_s = (until - since).total_seconds()
        escalations = self._escalations(agent_ids, since, until, on_version=on_version)
        return QualityFigures(
            len(agent_ids), windows, alarms, alarm_s, period_s, score_sum, score_count,
            escalations,
        )  # fmt: skip

    def _escalations(
        self, agent_ids: list[str], since: datetime, until: datetime, *, on_version: bool | None
    ) -> int:
        """Inputs the group escalated within ``[since, until)`` (by the inputs' time)."""
        query = select(func.count()).where(
            EscalationRow.agent_id.in_(agent_ids),
            EscalationRow.pipeline == self._pipeline,
            EscalationRow.ts >= since,
            EscalationRow.ts < until,
        )
        if on_version is not None:
            same = EscalationRow.edge_model == f"{self._model} {self._version}"
            query = query.where(same if on_version else ~same)
        return int(self._session.scalar(query) or 0)

    def _alarms(
        self, agent_ids: list[str], since: datetime, until: datetime, *, on_version: bool | None
    ) -> tuple[int, float]:
        """Incidents started within ``[since, until)``, and the seconds incidents were open
        within it (one open when it began counts from ``since``), summed over the agents."""
        events = select(EventRow.agent_id, EventRow.state, EventRow.ts).where(
            EventRow.agent_id.in_(agent_ids),
            EventRow.pipeline == self._pipeline,
            EventRow.ts >= since,
            EventRow.ts < until,
            EventRow.state.in_(INCIDENT_STATES),
        )
        if on_version is not None:
            same = EventRow.model_version == self._version
            events = events.where(same if on_version else ~same)
        rows = self._session.execute(events.order_by(EventRow.agent_id, EventRow.seq)).all()
        alarms = sum(1 for _, state, _ in rows if state in ALARM_STATES)
        open_at = {agent_id: since for agent_id in self._open_at(agent_ids, since)}
        alarm_s = 0.0
        for agent_id, state, ts in rows:
            if state == "start":
                open_at.setdefault(agent_id, ts)
            elif state == "end" and agent_id in open_at:
                alarm_s += (ts - open_at.pop(agent_id)).total_seconds()
        alarm_s += sum((until - began).total_seconds() for began in open_at.values())
        return alarms, alarm_s

    def _open_at(self, agent_ids: list[str], since: datetime) -> list[str]:
        """The agents whose last incident before ``since`` was still open then (one query:
        each agent's last start or end before ``since``, ranked within the agent)."""
        rank = func.row_number().over(
            partition_by=EventRow.agent_id, order_by=(EventRow.ts.desc(), EventRow.seq.desc())
        )
        last = (
            select(EventRow.agent_id, EventRow.state, rank.label("rank"))
            .where(
                EventRow.agent_id.in_(agent_ids),
                EventRow.pipeline == self._pipeline,
                EventRow.ts < since,
                EventRow.state.in_(("start", "end")),
            )
            .subquery()
        )
        query = select(last.c.agent_id).where(last.c.rank == 1, last.c.state == "start")
        return list(self._session.scalars(query))
