"""Where each pipeline's model should run, with measured numbers (DESIGN §7, point 6).

For each agent's pipeline, over the last hours of its summaries and its latest status:

* **edge, as it runs:** its inference time (p50/p99 from status) and the bytes it sends
  (events and summaries, from summaries) against the raw bytes it reads;
* **the cloud alternative:** shipping the raw bytes up at the agent's link rate (its
  ``link_mbps`` label, else the rate it measured from its acks while draining a backlog, else
  the fleet's default: ``link_source`` says which), the edge -> cloud round trip
  (the end-to-end ack round trip from status), and the cloud's inference time for the same
  model (timed by the registry's inspection child, on one thread).

Each side's cost per month follows from prices per GB moved and per CPU-hour, and the verdict
says why: the link cannot carry the raw data, the round trip is over the latency budget of
local actions, or one side is cheaper.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloud_api.tables import AgentRow, SummaryRow
from shared.versions import version_key

MONTH_S = 30 * 24 * 3600.0
GB = 1e9
Side = Literal["edge", "cloud"]
LinkSource = Literal["configured", "measured", "default"]


@dataclass(frozen=True, slots=True)
class Prices:
    """What moving data and computing cost: per GB moved from agent to cloud, per CPU-hour in
    the cloud and on the edge (a gateway already owned: 0 unless told)."""

    per_gb: float = 0.09
    cloud_cpu_hour: float = 0.05
    edge_cpu_hour: float = 0.0


@dataclass(frozen=True, slots=True)
class Figures:
    """One agent's pipeline, measured."""

    agent_id: str
    pipeline: str
    model: str
    version: str
    windows_per_s: float
    raw_bps: float
    """Bytes per second read from the source (what the cloud would have to receive)."""
    sent_bps: float
    """Bytes per second sent now (events and summaries)."""
    edge_p50_ms: float | None
    edge_p99_ms: float | None
    rtt_ms: float | None
    link_mbps: float | None
    cloud_ms: float | None
    link_source: LinkSource | None = None
    """Where ``link_mbps`` comes from (None: no rate known)."""


@dataclass(frozen=True, slots=True)
class Placement:
    figures: Figures
    edge_per_month: float
    cloud_per_month: float | None
    verdict: Side
    reason: str


def place(figures: Figures, prices: Prices, latency_budget_ms: float) -> Placement:
    """The cost of each side per month and the verdict, with its reason."""
    f = figures
    edge_cpu_h = (f.edge_p50_ms or 0.0) / 1000.0 * f.windows_per_s * MONTH_S / 3600.0
    edge = f.sent_bps * MONTH_S / GB * prices.per_gb + edge_cpu_h * prices.edge_cpu_hour
    if f.cloud_ms is None:
        return Placement(f, edge, None, "edge", "no cloud inference time for this model")
    cloud_cpu_h = f.cloud_ms / 1000.0 * f.windows_per_s * MONTH_S / 3600.0
    cloud = f.raw_bps * MONTH_S / GB * prices.per_gb + cloud_cpu_h * prices.cloud_cpu_hour
    raw_mbps = f.raw_bps * 8 / 1e6
    if f.link_mbps is not None and raw_mbps > f.link_mbps:
        why = f"the link ({f.link_mbps:g} Mbit/s) cannot carry the raw {raw_mbps:.3g} Mbit/s"
        return Placement(f, edge, cloud, "edge", why)
    if f.rtt_ms is not None and f.rtt_ms + f.cloud_ms > latency_budget_ms:
        answer = f.rtt_ms + f.cloud_ms
        why = f"the cloud answers in {answer:.3g} ms, over the {latency_budget_ms:g} ms budget"
        return Placement(f, edge, cloud, "edge", why)
    if cloud < edge:
        return Placement(f, edge, cloud, "cloud", _cheaper("cloud", cloud, edge))
    return Placement(f, edge, cloud, "edge", _cheaper("edge", edge, cloud))


def _cheaper(side: Side, cost: float, other: float) -> str:
    other_side = "cloud" if side == "edge" else "edge"
    return f"{side} costs {cost:.4g}/month against {other:.4g} in the {other_side}"


def fleet_figures(
    session: Session,
    *,
    since: datetime,
    until: datetime,
    default_link_mbps: float | None,
    cloud_ms: Callable[[str, str], float | None],
) -> list[Figures]:
    """Every agent's pipeline with summaries in ``[since, until)``; ``cloud_ms(model,
    version)`` is the cloud's inference time of that model (None: unknown). A pipeline that
    ran several models in the window is measured on them all and reported with the newest
    (by ``shared.versions``: "1.10.0" is newer than "1.9.0")."""
    rows = session.execute(
        select(
            SummaryRow.agent_id,
            SummaryRow.pipeline,
            SummaryRow.model_name,
            SummaryRow.model_version,
            func.sum(SummaryRow.raw_bytes),
            func.sum(SummaryRow.sent_bytes),
            func.sum(SummaryRow.inferences),
            func.min(SummaryRow.window_start),
            func.max(SummaryRow.window_end),
        )
        .where(SummaryRow.window_start >= since, SummaryRow.window_start < until)
        .group_by(
            SummaryRow.agent_id,
            SummaryRow.pipeline,
            SummaryRow.model_name,
            SummaryRow.model_version,
        )
    ).all()
    runs = _merge([_Run(*row) for row in rows])
    agents = {
        row.agent_id: row
        for row in session.scalars(
            select(AgentRow).where(AgentRow.agent_id.in_({run.agent_id for run in runs}))
        )
    }
    return [_figures(run, agents.get(run.agent_id), default_link_mbps, cloud_ms) for run in runs]


@dataclass(frozen=True, slots=True)
class _Run:
    """What one agent's pipeline did in the window, on one model or (merged) on all."""

    agent_id: str
    pipeline: str
    model: str
    version: str
    raw: int | None
    sent: int | None
    windows: int | None
    first: datetime | None
    last: datetime | None


def _merge(runs: Sequence[_Run]) -> list[_Run]:
    """One run per agent's pipeline, by agent and pipeline: the sums of all its models', on
    the newest model (name and version taken together, never mixed from two rows)."""
    grouped: dict[tuple[str, str], list[_Run]] = {}
    for run in runs:
        grouped.setdefault((run.agent_id, run.pipeline), []).append(run)
    merged = []
    for key in sorted(grouped):
        group = grouped[key]
        newest = max(group, key=lambda run: (version_key(run.version), run.model))
        firsts = [run.first for run in group if run.first is not None]
        lasts = [run.last for run in group if run.last is not None]
        merged.append(
            replace(
                newest,
                raw=sum(int(run.raw or 0) for run in group),
                sent=sum(int(run.sent or 0) for run in group),
                windows=sum(int(run.windows or 0) for run in group),
                first=min(firsts, default=None),
                last=max(lasts, default=None),
            )
        )
    return merged


def _figures(
    run: _Run,
    agent: AgentRow | None,
    default_link_mbps: float | None,
    cloud_ms: Callable[[str, str], float | None],
) -> Figures:
    first, last = run.first, run.last
    span_s = max((last - first).total_seconds(), 1.0) if first and last else 1.0
    status: dict[str, Any] = agent.last_status if agent is not None else {}
    mine: dict[str, Any] = next(
        (p for p in status.get("pipelines", []) if p.get("name") == run.pipeline), {}
    )
    labels = agent.labels if agent is not None else {}
    link_mbps, link_source = _link(
        labels.get("link_mbps"), status.get("link_mbps_measured"), default_link_mbps
    )
    return Figures(
        agent_id=run.agent_id,
        pipeline=run.pipeline,
        model=run.model,
        version=run.version,
        windows_per_s=int(run.windows or 0) / span_s,
        raw_bps=int(run.raw or 0) / span_s,
        sent_bps=int(run.sent or 0) / span_s,
        edge_p50_ms=_ms(mine.get("inference_p50_s")),
        edge_p99_ms=_ms(mine.get("inference_p99_s")),
        rtt_ms=_ms(status.get("ack_rtt_p50_s")),
        link_mbps=link_mbps,
        cloud_ms=cloud_ms(run.model, run.version),
        link_source=link_source,
    )


def _ms(seconds: Any) -> float | None:
    return float(seconds) * 1000.0 if isinstance(seconds, int | float) else None


def _link(
    label: str | None, measured: Any, default: float | None
) -> tuple[float | None, LinkSource | None]:
    """An agent's ``link_mbps`` label (a positive number), else the rate in its status
    (``link_mbps_measured``), else the fleet's default; with which of them it is."""
    try:
        value = float(label) if label is not None else None
    except ValueError:
        value = None
    if value is not None and math.isfinite(value) and value > 0:
        return value, "configured"
    if isinstance(measured, int | float) and not isinstance(measured, bool) and measured > 0:
        return float(measured), "measured"
    return default, None if default is None else "default"


def window(hours: float, now: datetime) -> tuple[datetime, datetime]:
    return now - timedelta(hours=hours), now
