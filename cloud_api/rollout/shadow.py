"""Shadow deployments, pure: where each agent's shadow stands, the figures over the agents'
reports, and what the window's end decides. No SQL, no MQTT, no clock (``shadow_store`` has
those).

Each agent of a ``strategy: shadow`` deployment is asked to run the candidate in shadow
(``updating``); it is ``healthy`` once it reports the candidate running, and ``failed`` when
it refused it (the reason is the agent's, e.g. an input shape that does not fit) or did not
get it running within ``agent_timeout_s``, or did not complete its window that long after it
should have. The window is over when every agent failed or completed. Then, over the complete
reports: with a ``promote_if`` rule the deployment is promoted into a canary of the same
version, or discarded, with the figures in the reason; without one it waits for an operator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from cloud_api.deployment_schemas import TargetState
from cloud_api.shadow_schemas import PromoteRule, ShadowFiguresOut, ShadowStrategy
from shared.messages import ShadowReport

Action = Literal["promote", "discard", "wait"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the end of a shadow window decides, and why (the figures are in ``reason``)."""

    action: Action
    reason: str


def agent_state(
    state: TargetState,
    report: ShadowReport | None,
    *,
    since: datetime,
    now: datetime,
    timeout_s: float,
) -> tuple[TargetState, str]:
    """The new state and reason of an agent asked to shadow (``updating`` or ``healthy``);
    ``since`` is when its state last changed, ``report`` its latest for this deployment."""
    timeout = timedelta(seconds=timeout_s)
    if report is not None and report.state == "refused":
        return "failed", report.reason or "the agent refused the candidate"
    if report is not None and report.state == "complete":
        return "healthy", "window complete"
    if report is not None and report.state == "running":
        started = report.started_at or since
        if now - started >= timedelta(seconds=report.window_s) + timeout:
            return "failed", f"window of {report.window_s:g} s not complete after {timeout_s:g} s"
        return "healthy", "shadowing"
    if state == "updating" and now - since >= timeout:
        where = report.state if report is not None else "no shadow report"
        return "failed", f"timed out in state {where}"
    return state, "installing the candidate" if report is not None else ""


def window_over(agents: Sequence[tuple[TargetState, ShadowReport | None]]) -> bool:
    """Whether every agent failed or completed its window."""
    return all(s == "failed" or (r is not None and r.state == "complete") for s, r in agents)


def _rate(count: int, total: int) -> float | None:
    return 1000.0 * count / total if total else None


def _worst(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def figures(reports: Sequence[ShadowReport]) -> ShadowFiguresOut:
    """The figures over some agents' reports: counts added up, rates over the sum, the
    lowest correlation and each model's worst latency (a fleet is as slow as its slowest)."""
    shadowed = sum(r.inputs_shadowed for r in reports)
    seen = sum(r.inputs_seen for r in reports)
    correlations = [r.score_correlation for r in reports if r.score_correlation is not None]
    return ShadowFiguresOut(
        inputs_seen=seen,
        inputs_shadowed=shadowed,
        skipped=seen - shadowed,
        agreement=sum(r.label_matches for r in reports) / shadowed if shadowed else None,
        score_correlation=min(correlations) if correlations else None,
        serving_alarm_rate_per_1k=_rate(sum(r.serving_alarm_windows for r in reports), shadowed),
        candidate_alarm_rate_per_1k=_rate(
            sum(r.candidate_alarm_windows for r in reports), shadowed
        ),
        serving_alarms=sum(r.serving_alarms for r in reports),
        candidate_alarms=sum(r.candidate_alarms for r in reports),
        serving_p50_s=_worst([r.serving_p50_s for r in reports]),
        serving_p99_s=_worst([r.serving_p99_s for r in reports]),
        candidate_p50_s=_worst([r.candidate_p50_s for r in reports]),
        candidate_p99_s=_worst([r.candidate_p99_s for r in reports]),
    )


def describe(f: ShadowFiguresOut) -> str:
    """The figures in one line, for a reason."""
    parts = [f"{f.inputs_shadowed} of {f.inputs_seen} inputs shadowed"]
    if f.agreement is not None:
        parts.append(f"agreement {f.agreement:.3f}")
    if f.score_correlation is not None:
        parts.append(f"score correlation {f.score_correlation:.3f}")
    if f.candidate_alarm_rate_per_1k is not None and f.serving_alarm_rate_per_1k is not None:
        parts.append(
            f"alarm rate {f.candidate_alarm_rate_per_1k:.1f}/1k vs serving "
            f"{f.serving_alarm_rate_per_1k:.1f}/1k"
        )
    if f.candidate_p99_s is not None and f.serving_p99_s is not None:
        parts.append(
            f"p99 {f.candidate_p99_s * 1e3:.3f} ms vs serving {f.serving_p99_s * 1e3:.3f} ms"
        )
    return ", ".join(parts)


def broken_bounds(rule: PromoteRule, f: ShadowFiguresOut) -> list[str]:
    """The bounds of ``rule`` the figures break (none: promote)."""
    broken: list[str] = []
    if rule.agreement_min is not None and (f.agreement or 0.0) < rule.agreement_min:
        broken.append(f"agreement {f.agreement or 0.0:.3f} < {rule.agreement_min:g}")
    if rule.alarm_rate_max_ratio is not None:
        serving = max(f.serving_alarm_rate_per_1k or 0.0, rule.alarm_floor_per_1k)
        candidate = f.candidate_alarm_rate_per_1k or 0.0
        if candidate > rule.alarm_rate_max_ratio * serving:
            broken.append(
                f"alarm rate {candidate:.1f}/1k > {rule.alarm_rate_max_ratio:g} x {serving:.1f}/1k"
            )
    if rule.latency_p99_max_ratio is not None:
        if f.candidate_p99_s is None or f.serving_p99_s is None:
            broken.append("no p99 latency to compare")
        elif f.candidate_p99_s > rule.latency_p99_max_ratio * f.serving_p99_s:
            broken.append(
                f"p99 {f.candidate_p99_s * 1e3:.3f} ms > {rule.latency_p99_max_ratio:g} x "
                f"{f.serving_p99_s * 1e3:.3f} ms"
            )
    return broken


def outcome(strategy: ShadowStrategy, complete: Sequence[ShadowReport], failed: int) -> Outcome:
    """What the end of the window decides over the complete reports (``failed`` agents did not
    complete theirs)."""
    if not complete:
        return Outcome("discard", f"no agent completed its shadow window ({failed} failed)")
    f = figures(complete)
    line = describe(f) + (f"; {failed} agent(s) failed" if failed else "")
    rule = strategy.promote_if
    if rule is None:
        return Outcome("wait", f"shadow window over: {line}; promote or discard")
    if f.inputs_shadowed < strategy.min_inputs:
        return Outcome(
            "discard",
            f"only {f.inputs_shadowed} inputs shadowed (min_inputs {strategy.min_inputs}): {line}",
        )
    broken = broken_bounds(rule, f)
    if broken:
        return Outcome("discard", f"promote_if not met: {'; '.join(broken)} ({line})")
    return Outcome("promote", f"promote_if met: {line}")
