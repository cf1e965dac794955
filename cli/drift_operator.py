"""The operator of the drift loop (``cli/drift_loop.py``): every step through the public REST
API with an operate or admin key, as a person with a terminal would take it.

``run_loop`` is the whole flow: measure the serving model on the healthy machine and after the
drift, label the drifted alarms, train, shadow, canary and roll out, measure again. Each step's
wall time goes into the result.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from cli.drift_loop import (
    CANARY_QUALITY,
    MODEL,
    PERIOD_S,
    PROMOTE_IF,
    DriftScenario,
    LoopResult,
    measure,
    sim_s,
    wait_for,
)

FINISHED_JOB = ("succeeded", "failed", "rejected", "cancelled")
MOVING = ("shadow", "canary", "rolling")
"""Deployment states that are not an end."""
FLUSH_S = 3.0
"""Wall seconds given to the outbox and ingest after the windows were read."""


class LoopFailedError(RuntimeError):
    """A step of the loop ended without what the next one needs; the message says why."""


class DriftOperator:
    """One agent's drifting pipeline, seen and driven through REST."""

    def __init__(
        self,
        http: httpx.Client,
        agent_id: str,
        pipeline: str,
        scenario: DriftScenario,
        *,
        t0: float,
        say: Callable[[str], None] = print,
    ) -> None:
        """``t0``: the wall-clock time (``time.time()``) just before the agent started."""
        self.http, self.agent_id, self.pipeline = http, agent_id, pipeline
        self.scenario, self.say, self.t0 = scenario, say, t0

    def sim_s(self, event: dict[str, Any]) -> float:
        return sim_s(event, self.t0)

    def _ok(self, response: httpx.Response) -> Any:
        if response.is_error:
            raise LoopFailedError(f"{response.request.method} {response.request.url.path}: "
                             f"{response.status_code} {response.text}")  # fmt: skip
        return response.json()

    def events(self) -> list[dict[str, Any]]:
        """Every event of the pipeline so far, following the cursor."""
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"agent_id": self.agent_id, "pipeline": self.pipeline,
                                  "limit": 1000}  # fmt: skip
        while True:
            page = self._ok(self.http.get("/api/v1/events", params=params))
            found += page["items"]
            if page["next_cursor"] is None:
                return found
            params["cursor"] = page["next_cursor"]

    def newest_s(self) -> float:
        page = self._ok(self.http.get("/api/v1/events", params={
            "agent_id": self.agent_id, "pipeline": self.pipeline, "limit": 1}))  # fmt: skip
        return self.sim_s(page["items"][0]) if page["items"] else 0.0

    def status(self) -> dict[str, Any]:
        """The pipeline's last reported status (what it runs, what it has done)."""
        agent = self._ok(self.http.get(f"/api/v1/agents/{self.agent_id}"))
        for pipeline in agent["pipelines"]:
            if pipeline["name"] == self.pipeline:
                found: dict[str, Any] = pipeline
                return found
        raise LoopFailedError(f"agent {self.agent_id} reports no pipeline {self.pipeline}")

    def wait_sim(self, t_s: float) -> None:
        """Until the pipeline has read its windows up to simulated ``t_s`` and its outbox has
        had a heartbeat's time to send the events."""
        wait_for(f"the pipeline at simulated {t_s:.0f} s",
                 lambda: self.status()["samples_in"] * PERIOD_S >= t_s,
                 self.scenario.timeout_s)  # fmt: skip
        time.sleep(FLUSH_S)

    def reporting(self) -> bool:
        """Whether the agent has reported the pipeline yet (it does once it is online)."""
        agent = self._ok(self.http.get(f"/api/v1/agents/{self.agent_id}"))
        return any(p["name"] == self.pipeline for p in agent["pipelines"])

    def serving(self) -> str:
        return str(self.status()["model"]["version"])

    def label(self, lo: float, hi: float) -> dict[str, int]:
        """A person's verdict on each alarm in ``[lo, hi)``: outside every fault a false alarm,
        inside one (or just before it: its windows after are the fault's) relabelled with it."""
        counts: dict[str, int] = {}
        for event in self.events():
            if event["state"] != "start" or not lo <= self.sim_s(event) < hi:
                continue
            fault, _ = self.scenario.fault_near(self.sim_s(event))
            verdict = ({"verdict": "false_alarm"} if fault is None
                       else {"verdict": "relabel", "label": fault})  # fmt: skip
            path = f"/api/v1/events/{event['id']}/feedback"
            self._ok(self.http.post(path, json=verdict))
            key = fault or "false_alarm"
            counts[key] = counts.get(key, 0) + 1
        return counts

    def labelled_samples(self) -> int:
        params: dict[str, Any] = {"agent_id": self.agent_id, "pipeline": self.pipeline,
                                  "source": "person", "limit": 1000}  # fmt: skip
        total = 0
        while True:
            page = self._ok(self.http.get("/api/v1/samples", params=params))
            total += len(page["items"])
            if page["next_cursor"] is None:
                return total
            params["cursor"] = page["next_cursor"]

    def wait_samples(self) -> int:
        """Until the labelled windows stop arriving (the uploader sends them in the
        background); how many there are."""
        seen = [-1]

        def settled() -> int:
            now = self.labelled_samples()
            done = now == seen[0] and now > 0
            seen[0] = now
            time.sleep(1.0)
            return now if done else 0

        count: int = wait_for("the labelled windows uploaded", settled, self.scenario.timeout_s)
        return count

    def train(self, base_version: str) -> dict[str, Any]:
        """A retraining job over this agent's labelled windows; the finished job."""
        body = {"pipeline": self.pipeline, "trainer": "vibration-classifier",
                "base_model": MODEL, "base_version": base_version,
                "selector": {"agents": [self.agent_id], "label_sources": ["person"]},
                "options": self.scenario.training, "gate": self.scenario.gate}  # fmt: skip
        job = self._ok(self.http.post("/api/v1/training-jobs", json=body))
        self.say(f"training job {job['id']} queued")

        def finished() -> dict[str, Any] | None:
            found: dict[str, Any] = self._ok(self.http.get(f"/api/v1/training-jobs/{job['id']}"))
            return found if found["state"] in FINISHED_JOB else None

        done: dict[str, Any] = wait_for("the training job", finished, self.scenario.timeout_s)
        if done["state"] != "succeeded":
            raise LoopFailedError(f"training job {job['id']} {done['state']}: {done['reason']}")
        return done

    def _left(self, path: str, states: tuple[str, ...]) -> dict[str, Any] | None:
        """The deployment at ``path`` once its state is none of ``states``."""
        found: dict[str, Any] = self._ok(self.http.get(path))
        return found if found["state"] not in states else None

    def roll_out(self, version: str) -> dict[str, Any]:
        """Shadow ``version``, let the rule promote it to a canary, then to every target."""
        s = self.scenario
        strategy = {"kind": "shadow", "canary_fraction": 1.0,
                    "canary_healthy_s": s.canary_healthy_s, "agent_timeout_s": s.timeout_s,
                    "quality": CANARY_QUALITY if s.speed == 1.0 else None,
                    "shadow": {"window_s": s.shadow_window_s, "min_inputs": 20,
                               "promote_if": PROMOTE_IF}}  # fmt: skip
        body = {"model": MODEL, "version": version, "pipeline": self.pipeline,
                "target": {"agent_ids": [self.agent_id]}, "strategy": strategy}  # fmt: skip
        created = self._ok(self.http.post("/api/v1/deployments", json=body))
        path = f"/api/v1/deployments/{created['id']}"
        self.say(f"deployment {created['id']}: {version} in shadow")
        if s.speed != 1.0:
            self.say("canary judged on errors only: the machine runs faster than the wall clock, "
                     "and the quality gate compares events over wall-clock time")  # fmt: skip
        promoted = wait_for("the shadow's verdict", lambda: self._left(path, ("shadow",)),
                            s.timeout_s)  # fmt: skip
        self.say(f"shadow over: {promoted['reason']}")
        if promoted["state"] == "discarded":
            raise LoopFailedError(f"the shadow discarded {version}: {promoted['reason']}")
        ended = wait_for("the rollout to end", lambda: self._left(path, MOVING), s.timeout_s)
        if ended["state"] != "succeeded":
            raise LoopFailedError(f"deployment {created['id']} {ended['state']}: {ended['reason']}")
        wait_for(f"{version} serving", lambda: self.serving() == version, s.timeout_s)
        return {**ended, "shadow_reason": promoted["reason"]}


class _Steps:
    """Wall time per step, into the result as each ends."""

    def __init__(self, result: LoopResult, say: Callable[[str], None]) -> None:
        self.result, self.say, self.start = result, say, time.monotonic()

    def done(self, name: str) -> float:
        now = time.monotonic()
        self.result.steps.append((name, now - self.start))
        self.say(f"step done: {name} ({now - self.start:.1f} s)")
        self.start = now
        return now


def run_loop(operator: DriftOperator) -> LoopResult:
    """The closed loop from a healthy machine to a new version serving on the drifted one."""
    s, say, result = operator.scenario, operator.say, LoopResult()
    steps = _Steps(result, say)
    wait_for(f"{operator.agent_id} to report its pipeline", operator.reporting, s.timeout_s)
    base = operator.serving()
    operator.wait_sim(s.drift_at_s)
    drift_wall = steps.done("healthy machine")
    result.healthy = measure(s, operator.events(), base, (0.0, s.drift_at_s), operator.t0)
    say(f"drift: shaft speed -> {s.drifted_shaft_hz} Hz at simulated {s.drift_at_s:.0f} s")
    before_end = s.drift_at_s + s.measure_s
    operator.wait_sim(before_end)
    result.before = measure(s, operator.events(), base, (s.drift_at_s, before_end), operator.t0)
    steps.done("drifted, serving model measured")
    say(result.before.line())
    result.labelled = operator.label(s.drift_at_s, before_end)
    say(f"feedback: {result.labelled}; {operator.wait_samples()} windows labelled")
    steps.done("feedback on the drifted alarms")
    result.job = operator.train(base)
    result.version = str(result.job["result_version"])
    steps.done(f"training job {result.job['id']} -> {result.version}")
    result.deployment = operator.roll_out(result.version)
    result.drift_to_serving_s = steps.done("shadow, canary, rollout") - drift_wall
    events = operator.events()
    old = [operator.sim_s(e) for e in events if e["model_version"] != result.version]
    now_s = operator.status()["samples_in"] * PERIOD_S  # reported with the new version
    after = (max([now_s, *old]), max([now_s, *old]) + s.measure_s)
    operator.wait_sim(after[1])
    result.after = measure(s, operator.events(), result.version, after, operator.t0)
    steps.done("new version measured")
    return result
