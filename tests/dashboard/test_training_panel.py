"""The training panel, run in Chromium on the module the app serves: each job's state, reason,
gate checks and the lineage of the version it registered."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.dashboard.conftest import LiveServer

pytestmark = pytest.mark.browser

RENDER = """async (jobs) => {
  const { renderJobs } = await import("./static/js/training.js");
  renderJobs(document.querySelector('[data-testid="training-panel"]'), jobs);
}"""


def job(job_id: int, state: str, **changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "id": job_id, "pipeline": "spindle-vibration", "trainer": "vibration-classifier",
        "base_model": "vibration-anomaly", "base_version": "1.0.0", "version": None,
        "selector": {}, "options": {}, "gate": {}, "state": state, "progress": 0.0,
        "reason": "", "logs": [], "created_by": "alice", "worker": None, "attempts": 1,
        "dataset_version_id": None, "result_version": None, "report": None,
        "created_at": "2026-11-22T10:00:00Z", "started_at": None, "finished_at": None,
    }  # fmt: skip
    values.update(changes)
    return values


@pytest.fixture
def blank(page: Page, quiet_api: LiveServer) -> Page:
    page.goto(f"{quiet_api.url}/")
    expect(page.get_by_test_id("key-form")).to_be_visible()
    return page


def test_the_training_panel_shows_jobs_their_gate_and_lineage(blank: Page) -> None:
    report = {"passed": False, "checks": [
        {"name": "held_out.false_alarm_rate", "passed": False,
         "detail": "held-out false-alarm rate 0.0000 -> 0.0000 (not down)"},
        {"name": "shipped.recall", "passed": True, "detail": "shipped test set recall ok"},
    ]}  # fmt: skip
    jobs = [
        job(3, "running", progress=0.4),
        job(2, "succeeded", result_version="1.0.0-job2", dataset_version_id=5,
            reason="registered vibration-anomaly 1.0.0-job2"),
        job(1, "rejected", reason="gate not met: held-out false-alarm rate", report=report),
    ]  # fmt: skip
    panel = blank.get_by_test_id("training-panel")
    blank.evaluate(RENDER, jobs)

    expect(panel.get_by_test_id("job-row")).to_have_count(3)
    running = panel.locator('[data-testid="job-row"][data-job-id="3"]')
    expect(running.get_by_test_id("job-progress")).to_have_attribute("value", "0.4")
    done = panel.locator('[data-testid="job-row"][data-job-id="2"]')
    expect(done.get_by_test_id("job-state")).to_have_text("succeeded")
    expect(done.get_by_test_id("job-lineage")).to_have_text(
        "vibration-anomaly@1.0.0 → vibration-anomaly@1.0.0-job2 from dataset version 5"
    )
    rejected = panel.locator('[data-testid="job-row"][data-job-id="1"]')
    expect(rejected.get_by_test_id("job-reason")).to_contain_text("gate not met")
    expect(rejected.locator('[data-testid="job-check"][data-passed="false"]')).to_have_count(1)
    expect(panel.get_by_test_id("training-empty")).to_be_hidden()

    blank.evaluate(RENDER, [])
    expect(panel.get_by_test_id("job-row")).to_have_count(0)
    expect(panel.get_by_test_id("training-empty")).to_have_text("no training jobs")
