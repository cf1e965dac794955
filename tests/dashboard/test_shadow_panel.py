"""The shadow evaluation panel, run in Chromium on the module the app serves."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.dashboard.test_modules import blank as blank  # the page without a key

pytestmark = pytest.mark.browser

RENDER = """async (reports) => {
  const { renderShadows } = await import("./static/js/shadow.js");
  window.decided = [];
  renderShadows(document.querySelector('[data-testid="shadows-panel"]'), reports,
                async (id, action) => { window.decided.push([id, action]); });
}"""

FIGURES = {
    "inputs_seen": 120, "inputs_shadowed": 118, "skipped": 2, "agreement": 0.0169,
    "score_correlation": 0.1, "serving_alarm_rate_per_1k": 0.0,
    "candidate_alarm_rate_per_1k": 1000.0, "serving_alarms": 0, "candidate_alarms": 1,
    "serving_p50_s": 0.0004, "serving_p99_s": 0.0009, "candidate_p50_s": 0.0005,
    "candidate_p99_s": 0.0011,
}  # fmt: skip


def test_the_panel_shows_the_figures_and_decides_only_while_in_shadow(blank: Page) -> None:
    reports = [
        {"deployment_id": 4, "state": "shadow", "reason": "shadow window over: ...",
         "model": "vibration-anomaly", "version": "1.2.0", "figures": FIGURES, "agents": []},
        {"deployment_id": 3, "state": "discarded", "reason": "promote_if not met: agreement",
         "model": "vibration-anomaly", "version": "0.9.0", "figures": None, "agents": []},
    ]  # fmt: skip
    panel = blank.get_by_test_id("shadows-panel")
    blank.evaluate(RENDER, reports)
    expect(panel.get_by_test_id("shadow-row")).to_have_count(2)
    open_one = panel.locator('[data-testid="shadow-row"][data-deployment-id="4"]')
    expect(open_one).to_contain_text("vibration-anomaly@1.2.0")
    expect(open_one.get_by_test_id("shadow-inputs")).to_have_text("118 / 120")
    expect(open_one.get_by_test_id("shadow-agreement")).to_have_text("0.017")
    expect(open_one.get_by_test_id("shadow-alarms")).to_have_text("1000.0/1k vs 0.0/1k")
    expect(open_one.get_by_test_id("shadow-p99")).to_have_text("1.10 ms vs 0.900 ms")
    ended = panel.locator('[data-testid="shadow-row"][data-deployment-id="3"]')
    expect(ended.get_by_test_id("shadow-state")).to_have_text("discarded")
    expect(ended.get_by_test_id("shadow-discard")).to_have_count(0)
    # The page without a key hides its panels: the button is pressed by its event.
    open_one.get_by_test_id("shadow-discard").dispatch_event("click")
    assert blank.evaluate("window.decided") == [[4, "discard"]]
    expect(panel.get_by_test_id("shadows-empty")).to_be_hidden()

    blank.evaluate(RENDER, [])
    expect(panel.get_by_test_id("shadows-empty")).to_have_text("no shadow deployments")
